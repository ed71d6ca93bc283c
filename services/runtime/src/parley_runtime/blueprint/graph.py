"""The workflow graph of a blueprint, indexed for execution, and how an edge is chosen.

Parley runs the first entry of `entries` (the one named `main` when there is one). Leaving a node,
the edges from it are considered in their order in the blueprint:
- EVAL nodes follow the edge whose `branch` is `"true"` / `"false"` (booleans accepted too);
  WEBHOOK nodes the one whose `branch` is `"success"` / `"error"`, else an edge without a branch;
- among those, the first edge whose `condition` expression holds is taken, else the first edge
  without a `condition`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError

from parley_common.blueprint import NODE_DATA, Blueprint, BlueprintEdge, BlueprintNode, NodeType


class FlowError(Exception):
    """The flow cannot continue (a missing node or edge, invalid node data)."""


def _condition(edge: BlueprintEdge) -> str | None:
    value = (edge.model_extra or {}).get("condition")
    return value if isinstance(value, str) and value.strip() else None


@dataclass
class Graph:
    nodes: dict[str, BlueprintNode]
    edges: dict[str, list[BlueprintEdge]] = field(default_factory=dict)
    start_id: str = ""
    # Each node's data as validated the first time it ran: a blueprint never changes, and the
    # interpreter only reads it (a dialog node's data was validated again at every turn).
    _data: dict[str, BaseModel] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, blueprint: Blueprint | None) -> Graph:
        if blueprint is None or not blueprint.entries:
            raise FlowError("the agent has no blueprint entry to run")
        entry = next((e for e in blueprint.entries if e.name == "main"), blueprint.entries[0])
        nodes = {n.id: n for n in entry.workflow.nodes}
        edges: dict[str, list[BlueprintEdge]] = {}
        for edge in entry.workflow.edges:
            edges.setdefault(edge.source, []).append(edge)
        starts = [n.id for n in entry.workflow.nodes if n.type == NodeType.START]
        if len(starts) != 1:
            raise FlowError(f"the workflow must have exactly one {NodeType.START} node, not {len(starts)}")
        return cls(nodes=nodes, edges=edges, start_id=starts[0])

    def node(self, node_id: str) -> BlueprintNode:
        node = self.nodes.get(node_id)
        if node is None:
            raise FlowError(f"no node {node_id!r} in the workflow")
        return node

    def data(self, node: BlueprintNode) -> BaseModel:
        """`node`'s data as its type's model (`FlowError` if it is not valid)."""
        data = self._data.get(node.id)
        if data is None:
            data = self._data[node.id] = _validated(node.id, node.type, node.data)
        return data

    def has_branch(self, node_id: str, branch: str) -> bool:
        return any(e.branch == branch for e in self.edges.get(node_id, []))

    def next(self, node_id: str, holds: Callable[[str], Any], branch: str | None = None) -> str:
        """The node after `node_id`; `holds(expression)` evaluates edge conditions."""
        edges = self.edges.get(node_id, [])
        if branch is not None:
            candidates = [e for e in edges if e.branch == branch] or [e for e in edges if e.branch is None]
        else:
            candidates = edges
        for edge in candidates:
            condition = _condition(edge)
            if condition is not None and holds(condition):
                return edge.target
        for edge in candidates:
            if _condition(edge) is None:
                return edge.target
        where = f" for branch {branch!r}" if branch is not None else ""
        raise FlowError(f"node {node_id!r} has no edge to follow{where}")


class Graphs:
    """Each agent's graph, made once per version: the sessions of an agent share its snapshot
    (agents.py), and so its blueprint, until the agent changes; each of them made the graph again
    (~15 µs of an opening). One graph per agent, for its blueprint object (an `id` is only unique
    while its object lives, so the object is kept with it): the next version's replaces it, so no
    version but the last stays in memory; all are dropped past `limit` agents."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._graphs: dict[UUID, tuple[Blueprint, Graph]] = {}

    def of(self, agent_id: UUID, blueprint: Blueprint | None) -> Graph:
        if blueprint is None:
            return Graph.of(blueprint)
        known = self._graphs.get(agent_id)
        if known is not None and known[0] is blueprint:
            return known[1]
        graph = Graph.of(blueprint)
        if agent_id not in self._graphs and len(self._graphs) >= self.limit:
            self._graphs.clear()
        self._graphs[agent_id] = (blueprint, graph)
        return graph


def _validated(node_id: str, node_type: str, raw: dict[str, Any]) -> BaseModel:
    try:
        model = NODE_DATA[NodeType(node_type)]
    except ValueError as exc:
        raise FlowError(f"node {node_id!r} has the unknown type {node_type!r}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in detail["loc"])
        raise FlowError(f"node {node_id!r}: data.{where}: {detail['msg']}") from exc
