"""Cross-reference phase: names used in one place must be declared in another.

Scoping (docs 0.0.5 and "Input & Resources"): `input`, `resources` and `variables` are visible in
every handler; a trigger's own `input` only in that trigger's handler. Block outputs go to
`variables`; resources are written only by set-resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from parley_common.octavus import blocks
from parley_common.octavus.issues import Issue
from parley_common.octavus.models import AgentFormat, ArrayType, ObjectType, Protocol, UnionType
from parley_common.octavus.names import (
    KEBAB,
    MAIN_THREAD,
    MODEL_ID,
    VARIABLE,
    reference_root,
    type_references,
)
from parley_common.octavus.report import Reporter, Where, listing, suggest, where
from parley_common.octavus.schema import BlockSite, Parsed
from parley_common.octavus.templates import placeholders

_SCOPE_WORDS = "input, resources, variables or the trigger's input"


@dataclass
class PromptUse:
    prompt: str
    provided: set[str]
    at: Where


@dataclass
class Checker:
    parsed: Parsed
    fmt: AgentFormat
    prompts: dict[str, str]
    report: Reporter
    session: dict[str, str] = field(default_factory=dict)  # variable name -> declaring section
    prompt_uses: list[PromptUse] = field(default_factory=list)
    used_tools: set[str] = field(default_factory=set)

    @property
    def protocol(self) -> Protocol:
        return self.parsed.protocol

    def broken(self, section: str) -> set[str]:
        return self.parsed.broken.get(section, set())

    def run(self) -> None:
        self.declarations()
        self.custom_types()
        if self.fmt == "worker":
            self.worker_shape()
            self.container(self.parsed.steps, dict(self.session), worker=True)
        else:
            self.interactive_shape()
            self.agent()
            started = {s.block.thread for sites in self.parsed.handlers.values() for s in sites
                       if isinstance(s.block, blocks.StartThread)}  # fmt: skip
            for trigger, sites in self.parsed.handlers.items():
                scope = dict(self.session)
                if trigger in self.protocol.triggers:
                    scope.update({n: "trigger input" for n in self.protocol.triggers[trigger].input})
                if not sites:
                    self.report.warn(where("handlers", trigger), f"handler `{trigger}` has no blocks")
                self.container(sites, scope, worker=False, started_elsewhere=started)
        self.prompt_placeholders()
        for name in self.protocol.tools:
            if name not in self.used_tools:
                self.report.warn(
                    where("tools", name),
                    f"tool `{name}` is never used: list it in `agent.tools` (or a start-thread's `tools`) "
                    "or call it with a tool-call block",
                )

    # --- declarations --------------------------------------------------------------------

    def declarations(self) -> None:
        p = self.protocol
        for section, names in (("input", p.input), ("resources", p.resources), ("variables", p.variables)):
            for name in [*names, *sorted(self.broken(section))]:
                if name in self.session:
                    self.report.add(
                        where(section, name), f"`{name}` is already declared in {self.session[name]}"
                    )
                    continue
                self.session[name] = section
                self.naming(where(section, name), name)
        for trigger, definition in p.triggers.items():
            if not KEBAB.match(trigger):
                self.report.warn(
                    where("triggers", trigger), f"trigger names are lowercase-with-dashes: `{trigger}`"
                )
            for name in definition.input:
                self.naming(where("triggers", trigger, "input", name), name)
                if name in self.session:
                    self.report.warn(
                        where("triggers", trigger, "input", name),
                        f"trigger input `{name}` hides the {self.session[name]} variable of the same name",
                    )
        for tool in p.tools:
            if not KEBAB.match(tool):
                self.report.warn(where("tools", tool), f"tool names are lowercase-with-dashes: `{tool}`")

    def naming(self, at: Where, name: str) -> None:
        if not VARIABLE.match(name):
            self.report.warn(at, f"variable names are UPPERCASE_SNAKE_CASE: `{name}`")

    def custom_types(self) -> None:
        p = self.protocol
        known = set(p.types) | self.broken("types")
        uses: list[tuple[Where, str]] = []
        for section, entries in (("input", p.input), ("resources", p.resources), ("variables", p.variables)):
            uses += [(where(section, n, "type"), d.type) for n, d in entries.items()]
        for trigger, trig in p.triggers.items():
            uses += [(where("triggers", trigger, "input", n, "type"), d.type) for n, d in trig.input.items()]
        for tool, tool_def in p.tools.items():
            uses += [
                (where("tools", tool, "parameters", n, "type"), d.type)
                for n, d in tool_def.parameters.items()
            ]
        for name, typedef in p.types.items():
            if isinstance(typedef, ObjectType):
                for prop, d in typedef.root.items():
                    uses.append((where("types", name, prop, "type"), d.type))
                    if d.items is not None:
                        uses.append((where("types", name, prop, "items", "type"), d.items.type))
            elif isinstance(typedef, ArrayType):
                uses.append((where("types", name, "items", "type"), typedef.items.type))
            else:
                self.union(name, typedef)
        for at, type_name in uses:
            ref = type_references(type_name)
            if ref is not None and ref not in known:
                self.report.add(at, f"unknown type `{type_name}`{suggest(ref, known)}")

    def union(self, name: str, typedef: UnionType) -> None:
        for i, member in enumerate(typedef.any_of):
            at = where("types", name, "anyOf", i)
            variant = self.protocol.types.get(member)
            if not isinstance(variant, ObjectType):
                self.report.add(at, f"union member `{member}` must be an object type declared in `types`")
            elif (
                typedef.discriminator not in variant.root or variant.root[typedef.discriminator].const is None
            ):
                self.report.add(
                    at, f"`{member}` needs a `{typedef.discriminator}` property with a `const` value"
                )

    # --- overall shape -------------------------------------------------------------------

    def interactive_shape(self) -> None:
        for key in ("steps", "output"):
            if key in self.parsed.present:
                self.report.add(
                    where(key), f"`{key}` is only for worker agents (settings.format is interactive)"
                )
        if self.protocol.agent is None and "agent" not in self.parsed.present:
            self.report.add(
                where("agent"), "missing `agent` section: interactive agents need `model` and `system`"
            )
        for trigger in self.protocol.triggers:
            if trigger not in self.parsed.handlers:
                self.report.add(where("triggers", trigger), f"trigger `{trigger}` has no handler")
        for handler in self.parsed.handlers:
            if handler not in self.protocol.triggers and handler not in self.broken("triggers"):
                self.report.add(
                    where("handlers", handler),
                    f"handler for undeclared trigger `{handler}`{suggest(handler, self.protocol.triggers)}",
                )

    def worker_shape(self) -> None:
        for key in ("triggers", "handlers", "agent"):
            if key in self.parsed.present:
                self.report.add(
                    where(key),
                    f"`{key}` is not used by worker agents: workers run `steps` (settings.format is worker)",
                )
        if not self.parsed.steps:
            self.report.add(where("steps"), "a worker needs `steps`")
        output = self.protocol.output
        if output is not None and output not in self.protocol.variables:
            self.report.add(where("output"), f"output `{output}` is not declared in `variables`")

    def agent(self) -> None:
        agent = self.protocol.agent
        if agent is None:
            return
        at = where("agent")
        self.model_id(at.at("model"), agent.model)
        if self.prompt_exists(at.at("system"), agent.system):
            self.prompt_uses.append(
                PromptUse(agent.system, {n for n, _ in blocks.bindings(agent.input)}, at.at("system"))
            )
        self.input_bindings(at, agent.input, self.session)
        self.tool_list(at, agent.tools)

    # --- shared checks -------------------------------------------------------------------

    def model_id(self, at: Where, model: str) -> None:
        if not MODEL_ID.match(model):
            self.report.add(at, f"model must be `provider/model-id`, e.g. `openai/gpt-4o` (got `{model}`)")

    def prompt_exists(self, at: Where, name: str) -> bool:
        if name in self.prompts:
            return True
        self.report.add(at, f"prompt `{name}` not found in prompts/ (have: {listing(self.prompts)})")
        return False

    def tool_list(self, at: Where, tools: list[str]) -> None:
        for i, tool in enumerate(tools):
            self.used_tools.add(tool)
            if tool not in self.protocol.tools and tool not in self.broken("tools"):
                self.report.add(
                    at.at("tools", i), f"unknown tool `{tool}`{suggest(tool, self.protocol.tools)}"
                )

    def reference(self, at: Where, ref: str, scope: dict[str, str]) -> None:
        root = reference_root(ref)
        if root is None or root not in scope:
            self.report.add(at, f"`{ref}` is not declared in {_SCOPE_WORDS}{suggest(root or ref, scope)}")

    def input_bindings(self, at: Where, items: list[str | dict[str, str]], scope: dict[str, str]) -> None:
        for i, item in enumerate(items):
            for _name, ref in blocks.bindings([item]):
                self.reference(
                    at.at("input", i) if isinstance(item, str) else at.at("input", i, _name), ref, scope
                )

    def output(self, at: Where, name: str | None) -> None:
        if name is None or name in self.protocol.variables:
            return
        section = self.session.get(name)
        if section == "variables":  # declared, but its definition is broken (reported already)
            return
        if section == "resources":
            self.report.add(
                at, f"`{name}` is a resource: outputs go to `variables`; write resources with set-resource"
            )
        elif section == "input":
            self.report.add(
                at, f"`{name}` is a session input, which is immutable: declare an output in `variables`"
            )
        else:
            self.report.add(
                at, f"output `{name}` is not declared in `variables`{suggest(name, self.protocol.variables)}"
            )

    # --- blocks --------------------------------------------------------------------------

    def container(
        self,
        sites: list[BlockSite],
        scope: dict[str, str],
        *,
        worker: bool,
        started_elsewhere: Iterable[str] = (),
    ) -> None:
        started: set[str] = set()
        later = {s.block.thread for s in sites if isinstance(s.block, blocks.StartThread)}
        elsewhere = set(started_elsewhere) - later if not worker else set()
        for site in sites:
            block, at = site.block, site.at
            if block is None:
                continue
            if isinstance(block, (blocks.AddMessage, blocks.NextMessage, blocks.SerializeThread)):
                self.thread(at, block.thread, started, later, elsewhere, worker)
            if isinstance(block, blocks.AddMessage):
                if self.prompt_exists(at.at("prompt"), block.prompt):
                    self.prompt_uses.append(
                        PromptUse(block.prompt, {n for n, _ in blocks.bindings(block.input)}, at)
                    )
                self.input_bindings(at, block.input, scope)
                if block.ui_content is not None:
                    self.reference(at.at("uiContent"), block.ui_content, scope)
            elif isinstance(block, blocks.NextMessage):
                self.next_message(at, block)
            elif isinstance(block, blocks.ToolCall):
                self.tool_call(at, block, scope)
            elif isinstance(block, blocks.SetResource):
                self.set_resource(at, block, scope)
            elif isinstance(block, blocks.SerializeThread):
                self.output(at.at("output"), block.output)
            elif isinstance(block, blocks.StartThread):
                self.start_thread(at, block, scope, worker)
                started.add(block.thread)
            elif isinstance(block, blocks.GenerateImage):
                self.reference(at.at("prompt"), block.prompt, scope)
                self.output(at.at("output"), block.output)

    def thread(
        self,
        at: Where,
        thread: str | None,
        started: set[str],
        later: set[str],
        elsewhere: set[str],
        worker: bool,
    ) -> None:
        if thread is None or thread == MAIN_THREAD:
            if worker:
                self.report.add(
                    at, "workers have no main thread: set `thread` to one opened by a start-thread step"
                )
            return
        if thread in started or thread in elsewhere:
            return
        if thread in later:
            self.report.add(at.at("thread"), f"thread `{thread}` is used before its start-thread block")
        else:
            self.report.add(at.at("thread"), f"thread `{thread}` is not opened by any start-thread block")

    def next_message(self, at: Where, block: blocks.NextMessage) -> None:
        self.output(at.at("output"), block.output)
        if block.independent and block.output is None:
            self.report.warn(at, "an independent next-message without `output` discards what it generates")
        if block.response_type is not None:
            typedef = self.protocol.types.get(block.response_type)
            if typedef is None and block.response_type in self.broken("types"):
                pass
            elif typedef is None:
                hint = suggest(block.response_type, self.protocol.types)
                self.report.add(at.at("responseType"), f"unknown type `{block.response_type}`{hint}")
            elif not isinstance(typedef, ObjectType):
                self.report.add(
                    at.at("responseType"), f"responseType `{block.response_type}` must be an object type"
                )

    def tool_call(self, at: Where, block: blocks.ToolCall, scope: dict[str, str]) -> None:
        self.used_tools.add(block.tool)
        self.output(at.at("output"), block.output)
        tool = self.protocol.tools.get(block.tool)
        if block.tool in self.broken("tools"):
            return
        if tool is None:
            self.report.add(
                at.at("tool"), f"unknown tool `{block.tool}`{suggest(block.tool, self.protocol.tools)}"
            )
            return
        for param, value in block.input.items():
            if param not in tool.parameters:
                self.report.add(
                    at.at("input", param),
                    f"tool `{block.tool}` has no parameter `{param}`{suggest(param, tool.parameters)}",
                )
            if isinstance(value, str):
                root = reference_root(value)
                if root is not None and root not in scope and VARIABLE.match(root):
                    self.report.warn(
                        at.at("input", param),
                        f"`{value}` is not a declared variable, so it is passed as a literal string",
                    )
        for param, definition in tool.parameters.items():
            if not definition.optional and param not in block.input:
                self.report.add(
                    at.at("input"), f"missing required parameter `{param}` of tool `{block.tool}`"
                )

    def set_resource(self, at: Where, block: blocks.SetResource, scope: dict[str, str]) -> None:
        resource = self.protocol.resources.get(block.resource)
        if resource is None and block.resource in self.broken("resources"):
            pass
        elif resource is None:
            section = self.session.get(block.resource)
            extra = (
                f" (it is declared in {section})"
                if section
                else suggest(block.resource, self.protocol.resources)
            )
            self.report.add(at.at("resource"), f"`{block.resource}` is not declared in `resources`{extra}")
        elif resource.readonly:
            self.report.add(at.at("resource"), f"resource `{block.resource}` is readonly")
        if isinstance(block.value, str):
            root = reference_root(block.value)
            if root is not None and VARIABLE.match(root):
                self.reference(at.at("value"), block.value, scope)

    def start_thread(self, at: Where, block: blocks.StartThread, scope: dict[str, str], worker: bool) -> None:
        if block.thread == MAIN_THREAD:
            self.report.add(at.at("thread"), "the main thread is configured by `agent`, not by start-thread")
        if block.model is not None:
            self.model_id(at.at("model"), block.model)
        elif worker:
            self.report.add(at, "missing required key `model` (workers have no `agent` to inherit it from)")
        if block.system is None:
            if worker:
                self.report.add(
                    at, "missing required key `system` (workers have no `agent` to inherit it from)"
                )
        elif self.prompt_exists(at.at("system"), block.system):
            self.prompt_uses.append(
                PromptUse(block.system, {n for n, _ in blocks.bindings(block.input)}, at.at("system"))
            )
        self.input_bindings(at, block.input, scope)
        self.tool_list(at, block.tools)

    # --- prompts -------------------------------------------------------------------------

    def prompt_placeholders(self) -> None:
        declared = set(self.session)
        for definition in self.protocol.triggers.values():
            declared.update(definition.input)
        for name, source in self.prompts.items():
            uses = [u for u in self.prompt_uses if u.prompt == name]
            known = declared.union(*(u.provided for u in uses))
            reported: set[str] = set()
            for ph in placeholders(source):
                if ph.name is None:
                    self.prompt_issue(
                        name, ph.line, f"`{{{{{ph.raw}}}}}` is not a variable reference; it stays as text"
                    )
                elif ph.name not in known and ph.name not in reported:
                    reported.add(ph.name)
                    self.prompt_issue(
                        name,
                        ph.line,
                        f"`{{{{{ph.raw}}}}}` uses `{ph.name}`, which is not declared in {_SCOPE_WORDS}",
                        error=True,
                    )
            for use in uses:
                missing = sorted({ph.name for ph in placeholders(source) if ph.name} & (known - use.provided))
                for variable in missing:
                    self.report.warn(
                        use.at,
                        f"prompt `{name}` uses `{{{{{variable}}}}}`, which this block does not pass "
                        "in `input`; it renders empty",
                    )

    def prompt_issue(self, prompt: str, line: int, message: str, *, error: bool = False) -> None:
        self.report.issues.append(
            Issue(
                path=f"prompts.{prompt}", line=line, message=message, severity="error" if error else "warning"
            )
        )
