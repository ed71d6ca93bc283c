"""Blueprint lint: every problem that would stop a graph from running, each with where it is.

Pure: no I/O. Whether a TRANSFER target agent exists needs the database, so the linter returns
those targets for the caller to check (`lint.service`). Node data is validated with the models of
`parley_common.blueprint` and templates/expressions with `parley_common.templating`, the very code
the runtime executes, so what lint accepts is what runs. docs/blueprints.md lists every code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from parley_common.blueprint import (
    NODE_DATA,
    TERMINAL_TYPES,
    Blueprint,
    BlueprintEdge,
    BlueprintNode,
    DialogData,
    EmailNotifyData,
    EndData,
    EvalData,
    NodeType,
    SetVarData,
    StartData,
    TerminateData,
    TransferData,
    WebhookData,
)
from parley_common.templating import check_expression, check_template

# Edge `branch` values of the branching node types. Leaving such a node, the runtime follows the
# edges of the outcome's branch, or else the edges without a branch; so each outcome needs one or
# the other, or the session fails there. Other node types ignore `branch`.
BRANCHES: dict[NodeType, frozenset[str]] = {
    NodeType.EVAL: frozenset({"true", "false"}),
    NodeType.WEBHOOK: frozenset({"success", "error"}),
}


Report = Callable[..., None]


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    entry: str | None = None
    node_id: str | None = None
    edge_id: str | None = None

    def render(self) -> str:
        where = []
        if self.entry is not None:
            where.append(f"entry {self.entry!r}")
        if self.node_id is not None:
            where.append(f"node {self.node_id!r}")
        if self.edge_id is not None:
            where.append(f"edge {self.edge_id!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass(frozen=True)
class TransferTarget:
    entry: str
    node_id: str
    agent_id: str


@dataclass
class LintResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    transfers: list[TransferTarget] = field(default_factory=list)


def edge_label(edge: BlueprintEdge) -> str:
    """An edge's `id` when it has one, else `source->target`."""
    extra = edge.model_extra or {}
    edge_id = extra.get("id")
    return (
        str(edge_id) if isinstance(edge_id, str | int) and str(edge_id) else f"{edge.source}->{edge.target}"
    )


def lint(blueprint: Blueprint) -> LintResult:
    result = LintResult()
    if not blueprint.entries:
        result.diagnostics.append(Diagnostic("blueprint.no_entries", "the blueprint has no entries"))
        return result
    seen: set[str] = set()
    for entry in blueprint.entries:
        if entry.name in seen:
            result.diagnostics.append(
                Diagnostic("entry.duplicate_name", "another entry has the same name", entry=entry.name)
            )
        seen.add(entry.name)
        _lint_entry(entry.name, entry.workflow.nodes, entry.workflow.edges, result)
    return result


def _lint_entry(entry: str, nodes: list[BlueprintNode], edges: list[BlueprintEdge], out: LintResult) -> None:
    def report(code: str, message: str, *, node: str | None = None, edge: str | None = None) -> None:
        out.diagnostics.append(Diagnostic(code, message, entry=entry, node_id=node, edge_id=edge))

    by_id: dict[str, BlueprintNode] = {}
    types: dict[str, NodeType | None] = {}
    for node in nodes:
        if node.id in by_id:
            report("node.duplicate_id", "another node has the same id", node=node.id)
            continue
        by_id[node.id] = node
        types[node.id] = _node_type(node)
        if types[node.id] is None:
            known = ", ".join(t.value for t in NodeType)
            report("node.unknown_type", f"unknown node type {node.type!r} (known: {known})", node=node.id)
            continue
        _lint_node_data(node, types[node.id], report, out.transfers, entry)

    starts = [n for n, t in types.items() if t is NodeType.START]
    if not starts:
        report("graph.no_start", f"no {NodeType.START.value} node")
    for extra_start in starts[1:]:
        report("graph.multiple_starts", f"more than one {NodeType.START.value} node", node=extra_start)

    graph: dict[str, list[str]] = {n: [] for n in by_id}
    reverse: dict[str, list[str]] = {n: [] for n in by_id}
    branches: dict[str, set[str | None]] = {n: set() for n in by_id}
    for edge in edges:
        label = edge_label(edge)
        # A terminal node ends the session: edges from it are never followed (and reported).
        if not _lint_edge(edge, label, by_id, types, report) or types.get(edge.source) in TERMINAL_TYPES:
            continue
        graph[edge.source].append(edge.target)
        reverse[edge.target].append(edge.source)
        branches[edge.source].add(edge.branch)

    for node_id, node_type in types.items():
        outcomes = BRANCHES.get(node_type) if node_type else None
        if outcomes is None or not branches[node_id] or None in branches[node_id]:
            # Not a branching node; no edges at all (`node.no_terminal_path` says so); or an edge
            # without a branch, which catches every outcome.
            continue
        for branch in sorted(outcomes - branches[node_id]):
            report(
                "node.missing_branch",
                f"no edge for the {branch!r} outcome (add one with that branch, or one without a branch)",
                node=node_id,
            )

    if not starts:
        return  # without an entry point every node is unreachable; that says nothing new
    reachable = _walk(starts, graph)
    for node_id in by_id:
        if node_id not in reachable:
            report("node.unreachable", f"not reachable from the {NodeType.START.value} node", node=node_id)
    terminals = [n for n, t in types.items() if t in TERMINAL_TYPES]
    finishes = _walk(terminals, reverse)
    for node_id in by_id:
        if node_id in reachable and node_id not in finishes:
            report(
                "node.no_terminal_path",
                "no path from here to an END, TERMINATE or TRANSFER node (the session would stall)",
                node=node_id,
            )


def _lint_edge(
    edge: BlueprintEdge,
    label: str,
    by_id: dict[str, BlueprintNode],
    types: dict[str, NodeType | None],
    report: Report,
) -> bool:
    """Report the edge's problems; True when it connects two existing nodes."""
    ok = True
    for end, node_id in (("source", edge.source), ("target", edge.target)):
        if node_id not in by_id:
            report("edge.dangling", f"{end} {node_id!r} is not a node of this entry", edge=label)
            ok = False
    condition = (edge.model_extra or {}).get("condition")
    # A blank condition is no condition, as the runtime reads it.
    if condition is not None and not (isinstance(condition, str) and not condition.strip()):
        problem = "must be a string" if not isinstance(condition, str) else check_expression(condition)
        if problem:
            report("edge.invalid_condition", f"condition: {problem}", edge=label)
    source_type = types.get(edge.source)
    if source_type in TERMINAL_TYPES:
        report("edge.from_terminal", f"leaves a {source_type} node, which ends the flow", edge=label)
    branch = edge.branch
    allowed = BRANCHES.get(source_type) if source_type else None
    if branch is not None and allowed is not None and branch not in allowed:
        report("edge.invalid_branch", f"branch must be one of {sorted(allowed)}", edge=label)
    return ok


def _node_type(node: BlueprintNode) -> NodeType | None:
    try:
        return NodeType(node.type)
    except ValueError:
        return None


def _lint_node_data(
    node: BlueprintNode,
    node_type: NodeType | None,
    report: Report,
    transfers: list[TransferTarget],
    entry: str,
) -> None:
    assert node_type is not None
    try:
        data = NODE_DATA[node_type].model_validate(node.data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in ("data", *err["loc"]))
            report("node.invalid_data", f"{where}: {err['msg']}", node=node.id)
        return
    for where, kind, source in _texts(data):
        problem = check_template(source) if kind == "template" else check_expression(source)
        if problem:
            report(f"node.invalid_{kind}", f"data.{where}: {problem}", node=node.id)
    if isinstance(data, TransferData):
        transfers.append(TransferTarget(entry=entry, node_id=node.id, agent_id=data.agent_id))


def _texts(data: BaseModel) -> Iterator[tuple[str, str, str]]:
    """(field path, "template" | "expression", source) of every template and expression."""
    templates: dict[str, str | None] = {}
    expressions: dict[str, str | None] = {}
    match data:
        case StartData():
            templates["greeting"] = data.greeting
        case DialogData():
            templates.update(prompt=data.prompt, message=data.message)
            expressions["exit_when"] = data.exit_when
        case EndData() | TerminateData():
            templates["message"] = data.message
        case EvalData():
            expressions["expression"] = data.expression
        case SetVarData():
            expressions.update({f"assignments.{i}.value": a.value for i, a in enumerate(data.assignments)})
        case WebhookData():
            templates["url"] = data.url
            templates.update({f"headers.{k}": v for k, v in data.headers.items()})
            if isinstance(data.body, str):
                templates["body"] = data.body
            elif isinstance(data.body, dict):
                templates.update(dict(_string_leaves(data.body, "body")))
        case EmailNotifyData():
            templates.update(to=data.to, subject=data.subject, body=data.body)
        case TransferData():
            templates["reason"] = data.reason
    for where, source in templates.items():
        if source is not None:
            yield where, "template", source
    for where, source in expressions.items():
        if source is not None:
            yield where, "expression", source


def _string_leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """String values inside a JSON webhook body: each is a template."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_leaves(item, f"{path}.{i}")


def _walk(roots: list[str], graph: dict[str, list[str]]) -> set[str]:
    seen = set(roots)
    queue = deque(roots)
    while queue:
        for nxt in graph[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
