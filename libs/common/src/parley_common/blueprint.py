"""Kivox blueprint graphs: the spec's `Blueprint`, and the `data` of every node type Parley runs.

The catalog lints against these models and the runtime executes them, so both agree on what a
node means. See docs/blueprints.md for the prose version with examples.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Template = Annotated[str, Field(max_length=20_000, description="A `{{VAR}}` template (Jinja2 sandbox).")]
Expression = Annotated[str, Field(max_length=2_000, description="An expression over session variables.")]


class NodeType(StrEnum):
    START = "CONTROL.START"
    DIALOG = "CONTROL.DIALOG"
    END = "CONTROL.END"
    EVAL = "LOGICAL.EVAL"
    SET_VAR = "FUNCTION.SET_VAR"
    WEBHOOK = "FUNCTION.WEBHOOK"
    EMAIL_NOTIFY = "FUNCTION.EMAIL_NOTIFY"
    TRANSFER = "FUNCTION.TRANSFER"
    TERMINATE = "FUNCTION.TERMINATE"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartData(_Data):
    """Entry point. Optionally greets the user. `variables` are defaults: a value the session was
    opened with (a client token's `data`) is kept."""

    greeting: Template | None = None
    variables: dict[Identifier, Any] = Field(default_factory=dict)


class DialogData(_Data):
    """Talk with the user. With `message`, say it verbatim (no LLM); otherwise the LLM answers each
    user turn under `prompt` (plus the agent's global system prompt). The node is left after
    `max_turns` user turns, or as soon as `exit_when` is true after a turn; without either it is
    left after one turn. `save_reply_as` stores the user's last message in a variable."""

    prompt: Template | None = None
    message: Template | None = None
    wait_for_input: bool = True
    max_turns: Annotated[int, Field(ge=1, le=1000)] | None = None
    exit_when: Expression | None = None
    save_reply_as: Identifier | None = None


class EndData(_Data):
    """Normal end of the flow: optional closing message, then `flow_complete` and close (flow_end)."""

    message: Template | None = None


class EvalData(_Data):
    """Branch: edges leaving this node carry `branch: "true"` or `branch: "false"`."""

    expression: Expression


class Assignment(_Data):
    name: Identifier
    value: Expression


class SetVarData(_Data):
    assignments: Annotated[list[Assignment], Field(min_length=1, max_length=100)]


class WebhookData(_Data):
    """HTTP call. Edges may carry `branch: "success"` / `"error"`; the JSON response (or text) is
    stored in `save_as`."""

    url: Template
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, Template] = Field(default_factory=dict)
    body: Template | dict[str, Any] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 10.0
    save_as: Identifier | None = None


class EmailNotifyData(_Data):
    to: Template
    subject: Template
    body: Template


class TransferData(_Data):
    """Hand the user to another agent: emits `transfer`, then closes with `agent_transfer`."""

    agent_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    reason: Template = ""


class TerminateData(_Data):
    """Stop the conversation now: optional message, then close with `script_terminate`."""

    message: Template | None = None
    reason: str | None = None


NODE_DATA: dict[NodeType, type[_Data]] = {
    NodeType.START: StartData,
    NodeType.DIALOG: DialogData,
    NodeType.END: EndData,
    NodeType.EVAL: EvalData,
    NodeType.SET_VAR: SetVarData,
    NodeType.WEBHOOK: WebhookData,
    NodeType.EMAIL_NOTIFY: EmailNotifyData,
    NodeType.TRANSFER: TransferData,
    NodeType.TERMINATE: TerminateData,
}
TERMINAL_TYPES = frozenset({NodeType.END, NodeType.TERMINATE, NodeType.TRANSFER})


def _always_present(*names: str) -> Callable[[dict[str, Any]], None]:
    """JSON schema hook: `names` are in every blueprint Parley stores or returns, so the schema lists
    them as required, as the Kivox contract does; input without them still gets their defaults."""

    def extra(schema: dict[str, Any]) -> None:
        required = schema.setdefault("required", [])
        required += [name for name in names if name not in required]

    return extra


class BlueprintNode(BaseModel):
    """Spec `BlueprintNode`: id, type, data, plus any extra fields (positions for editors…)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_always_present("data"))
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    type: Annotated[str, StringConstraints(max_length=100)]
    data: dict[str, Any] = Field(default_factory=dict)


class BlueprintEdge(BaseModel):
    """Spec `BlueprintEdge`: source, target, plus extra fields. Parley reads `id`, `branch`
    (EVAL true/false, WEBHOOK success/error) and `condition` (an expression; the first edge whose
    condition holds is taken)."""

    model_config = ConfigDict(extra="allow")
    source: Annotated[str, StringConstraints(max_length=200)]
    target: Annotated[str, StringConstraints(max_length=200)]

    @property
    def branch(self) -> str | None:
        """`branch` as the runtime reads it (and lint checks it): booleans and any letter case."""
        value = (self.model_extra or {}).get("branch")
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value).strip().lower()


class Workflow(BaseModel):
    model_config = ConfigDict(json_schema_extra=_always_present("nodes", "edges"))
    nodes: Annotated[list[BlueprintNode], Field(max_length=2000)] = Field(default_factory=list)
    edges: Annotated[list[BlueprintEdge], Field(max_length=10_000)] = Field(default_factory=list)


class BlueprintEntry(BaseModel):
    name: Annotated[str, StringConstraints(max_length=200)]
    workflow: Workflow


class Blueprint(BaseModel):
    model_config = ConfigDict(json_schema_extra=_always_present("version", "entries"))
    version: str = "1"
    entries: Annotated[list[BlueprintEntry], Field(max_length=100)] = Field(default_factory=list)
