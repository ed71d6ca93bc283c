"""Typed model of an Octavus agent definition: protocol.yaml, settings.json and prompts/*.md.

Follows the Octavus docs 0.0.5; where the published 2.0.0 packages (@octavus/cli,
@octavus/server-sdk, @octavus/client-sdk, @octavus/core) disagree, the packages win (see
docs/octavus-wire.md). Keys the docs define exhaustively are `extra="forbid"`, so a misspelt key
is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    model_validator,
)

from parley_common.octavus.blocks import (
    AddMessage,
    DisplayMode,
    GenerateImage,
    InputList,
    MaxSteps,
    NextMessage,
    SerializeThread,
    SetResource,
    StartThread,
    Temperature,
    Thinking,
    ToolCall,
    block_kind,
)
from parley_common.octavus.names import SLUG


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


def _none_is_empty(data: Any) -> Any:
    # `request-human:` with nothing under it is YAML null; it means "no settings".
    return {} if data is None else data


# Data types: string | number | integer | boolean | unknown | file, a PascalCase custom type from
# `types:`, or any of those with `[]` for an array. (0.0.5 lists the first four and `unknown`;
# `file[]` is what @octavus/client-sdk 2.0.0 uploads into a `FILES` input.)
DATA_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9]*(\[\])?$"
DataType = Annotated[str, StringConstraints(pattern=DATA_TYPE_PATTERN)]


class InputDef(_Strict):
    """An entry of `input:` (session input) or of a trigger's `input:`."""

    type: DataType
    description: str | None = None
    optional: bool = False
    default: Any = None


class VariableDef(_Strict):
    type: DataType
    description: str | None = None
    default: Any = None


class ResourceDef(_Strict):
    # docs 0.0.5's own overview omits `type` on a resource, so it is optional (unknown).
    type: DataType = "unknown"
    description: str | None = None
    default: Any = None
    readonly: bool = False


class TriggerDef(_Strict):
    description: str | None = None
    input: dict[str, InputDef] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        return _none_is_empty(data)


class ToolParameter(_Strict):
    type: DataType
    description: str | None = None
    optional: bool = False


class ToolDef(_Strict):
    description: str
    display: DisplayMode = "description"
    parameters: dict[str, ToolParameter] = Field(default_factory=dict)


class AgentConfig(_Strict):
    """The main thread's LLM configuration."""

    model: str = Field(description="`provider/model-id`, e.g. `anthropic/claude-sonnet-4-5`.")
    system: str = Field(description="System prompt name in prompts/ (without .md).")
    input: InputList = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    agentic: bool = False
    max_steps: MaxSteps = Field(default=10, alias="maxSteps")
    temperature: Temperature | None = None
    thinking: Thinking | None = None


# --- custom types (`types:`), used by `responseType` (structured output) -------------------------


class PropertyItems(_Strict):
    type: DataType


class PropertyDef(_Strict):
    type: DataType
    description: str | None = None
    optional: bool = False
    enum: list[str] | None = None
    const: Any = None
    items: PropertyItems | None = None  # with `type: array`


class ObjectType(RootModel[dict[str, PropertyDef]]):
    """`Product: {id: {type: string}, ...}`: properties by name."""


class ArrayType(_Strict):
    """A type that is an array: `CartItemList: {type: array, items: {type: CartItem}}`."""

    type: Literal["array"]
    items: PropertyItems
    description: str | None = None


class UnionType(_Strict):
    """A discriminated union of object types, told apart by a `const` property."""

    any_of: Annotated[list[str], Field(min_length=2)] = Field(alias="anyOf")
    discriminator: str
    description: str | None = None


TypeDef = ObjectType | ArrayType | UnionType


def type_kind(data: Any) -> str:
    """Which TypeDef a raw `types:` entry is. An object type may have a *property* named `type`,
    so only `type: array` (a string) marks an array type."""
    if isinstance(data, dict) and "anyOf" in data:
        return "union"
    if isinstance(data, dict) and data.get("type") == "array":
        return "array"
    return "object"


TYPE_KINDS: dict[str, type[TypeDef]] = {"object": ObjectType, "array": ArrayType, "union": UnionType}

AnyTypeDef = Annotated[
    Annotated[ObjectType, Tag("object")]
    | Annotated[ArrayType, Tag("array")]
    | Annotated[UnionType, Tag("union")],
    Discriminator(type_kind),
]

AnyBlock = Annotated[
    Annotated[AddMessage, Tag("add-message")]
    | Annotated[NextMessage, Tag("next-message")]
    | Annotated[ToolCall, Tag("tool-call")]
    | Annotated[SetResource, Tag("set-resource")]
    | Annotated[SerializeThread, Tag("serialize-thread")]
    | Annotated[StartThread, Tag("start-thread")]
    | Annotated[GenerateImage, Tag("generate-image")],
    Discriminator(block_kind),
]

# Blocks by name, in the order they run (YAML mappings keep their order).
Blocks = dict[str, AnyBlock]

TOP_LEVEL_KEYS = (
    "input", "resources", "triggers", "variables", "tools", "types", "agent", "handlers", "steps", "output",
)  # fmt: skip


class Protocol(_Strict):
    """protocol.yaml. Interactive agents use triggers + agent + handlers; workers (settings
    `format: worker`) use `steps` and return `output`."""

    input: dict[str, InputDef] = Field(default_factory=dict)
    resources: dict[str, ResourceDef] = Field(default_factory=dict)
    triggers: dict[str, TriggerDef] = Field(default_factory=dict)
    variables: dict[str, VariableDef] = Field(default_factory=dict)
    tools: dict[str, ToolDef] = Field(default_factory=dict)
    types: dict[str, AnyTypeDef] = Field(default_factory=dict)
    agent: AgentConfig | None = None
    handlers: dict[str, Blocks] = Field(default_factory=dict)
    steps: Blocks = Field(default_factory=dict)
    output: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: ({} if v is None and k not in ("agent", "output") else v) for k, v in data.items()}
            if isinstance(data.get("handlers"), dict):
                data["handlers"] = {k: _none_is_empty(v) for k, v in data["handlers"].items()}
        return data


# --- settings.json and the bundle -------------------------------------------------------------

AgentFormat = Literal["interactive", "worker"]


class AgentSettings(_Strict):
    """settings.json. `format` is `interactive` or `worker` as in @octavus/cli 2.0.0
    (docs 0.0.5 say `generation`, which the CLI itself rejects)."""

    slug: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=SLUG.pattern)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str | None = None
    format: AgentFormat


class AgentPrompt(BaseModel):
    name: str
    content: str


class AgentDefinition(BaseModel):
    """The definition as the CLI sends it (`POST /api/agents[/validate]`) and `GET /api/agents/:id`
    returns it: protocol as YAML text, prompts as a list. `id` is present in responses only."""

    settings: AgentSettings
    protocol: str
    prompts: list[AgentPrompt] = Field(default_factory=list)
    id: str | None = None

    def prompt_map(self) -> dict[str, str]:
        return {p.name: p.content for p in self.prompts}


class AgentBundle(BaseModel):
    """A validated definition, ready for the runtime: typed protocol, settings, prompts by name."""

    model_config = ConfigDict(frozen=True)

    settings: AgentSettings
    protocol: Protocol
    prompts: dict[str, str]
    protocol_source: str
