"""Handler blocks: the steps a handler (or a worker's `steps`) runs in order.

The block kind is named by `block:` (the form of @octavus/cli 2.0.0's README and the current
docs) or by `type:` (the form of docs 0.0.5); both are accepted and normalised to `block`.
Kinds: add-message, next-message, tool-call, set-resource, serialize-thread, start-thread
(docs 0.0.5) and generate-image (an operation block of @octavus/client-sdk 2.0.0).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

DisplayMode = Literal["hidden", "name", "description", "stream"]
Thinking = Literal["low", "medium", "high"]
MaxSteps = Annotated[int, Field(ge=1, le=1000)]
Temperature = Annotated[float, Field(ge=0, le=2)]


def _input_list(items: Any) -> Any:
    # Checked by hand so an error reads as one sentence, not one per member of a union.
    if not isinstance(items, list):
        raise ValueError("must be a list of variable names or `NAME: VARIABLE` pairs")
    for item in items:
        if isinstance(item, str):
            continue
        if not (isinstance(item, dict) and len(item) == 1):
            raise ValueError(f"entry {item!r} must be a variable name or one `NAME: VARIABLE` pair")
        ((name, variable),) = item.items()
        if not (isinstance(name, str) and isinstance(variable, str)):
            raise ValueError(f"entry {item!r} must map a name to a variable name")
    return items


# `input: [USER_MESSAGE, CONVERSATION: CONVERSATION_TEXT]`: a name passes a variable under its
# own name; a one-key mapping passes the variable on the right under the name on the left.
InputList = Annotated[list[str | dict[str, str]], BeforeValidator(_input_list)]


def bindings(items: list[str | dict[str, str]]) -> list[tuple[str, str]]:
    """`(name seen by the prompt, variable reference)` for each entry of an input list."""
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, item))
        else:
            out.extend(item.items())
    return out


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    DEFAULT_DISPLAY: ClassVar[DisplayMode] = "description"

    description: str | None = Field(default=None, description="Shown in the UI while the block runs.")
    display: DisplayMode | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind_from_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" in data:
            if "block" in data:
                raise ValueError("give the block kind once: `block` or `type`, not both")
            data = {("block" if key == "type" else key): value for key, value in data.items()}
        return data

    @property
    def effective_display(self) -> DisplayMode:
        return self.display or self.DEFAULT_DISPLAY


class AddMessage(_Block):
    """Append a message, rendered from a prompt, to a thread."""

    DEFAULT_DISPLAY: ClassVar[DisplayMode] = "hidden"

    block: Literal["add-message"]
    role: Literal["user", "assistant", "system"]
    prompt: str = Field(description="Name of a prompt in prompts/ (without .md).")
    input: InputList = Field(default_factory=list)
    thread: str | None = None
    visible: bool = Field(default=True, description="False: the LLM sees it, the user does not.")
    ui_content: str | None = Field(default=None, alias="uiContent")


class NextMessage(_Block):
    """Ask the LLM for the next message of a thread (tools per the thread's config)."""

    DEFAULT_DISPLAY: ClassVar[DisplayMode] = "stream"

    block: Literal["next-message"]
    thread: str | None = None
    independent: bool = Field(default=False, description="Keep the output out of the main chat.")
    output: str | None = Field(default=None, description="Variable that receives the response.")
    response_type: str | None = Field(default=None, alias="responseType")


class ToolCall(_Block):
    """Call a tool deterministically. `input` maps tool parameters to variables or literals."""

    block: Literal["tool-call"]
    tool: str
    input: dict[str, Any] = Field(default_factory=dict)
    output: str | None = None


class SetResource(_Block):
    DEFAULT_DISPLAY: ClassVar[DisplayMode] = "name"

    block: Literal["set-resource"]
    resource: str
    value: Any = Field(description="A variable reference (or a literal).")


class SerializeThread(_Block):
    """Render a thread's messages as text into a variable."""

    block: Literal["serialize-thread"]
    thread: str | None = None
    format: Literal["markdown", "json"] = "markdown"
    output: str


class StartThread(_Block):
    """Open a named thread; unset LLM settings are inherited from `agent`."""

    block: Literal["start-thread"]
    thread: str
    model: str | None = None
    system: str | None = None
    input: InputList = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    agentic: bool | None = None
    max_steps: MaxSteps | None = Field(default=None, alias="maxSteps")
    temperature: Temperature | None = None
    thinking: Thinking | None = None


class GenerateImage(_Block):
    block: Literal["generate-image"]
    prompt: str = Field(description="Variable holding the image prompt (not a prompt file).")
    image_model: str = Field(alias="imageModel")
    size: Literal["1024x1024", "1792x1024", "1024x1792"] = "1024x1024"
    output: str | None = None


Block = AddMessage | NextMessage | ToolCall | SetResource | SerializeThread | StartThread | GenerateImage

BLOCK_KINDS: dict[str, type[Block]] = {
    "add-message": AddMessage,
    "next-message": NextMessage,
    "tool-call": ToolCall,
    "set-resource": SetResource,
    "serialize-thread": SerializeThread,
    "start-thread": StartThread,
    "generate-image": GenerateImage,
}


def block_kind(data: Any) -> Any:
    """The kind named by a raw block (`block:` or `type:`), for choosing its model."""
    if isinstance(data, dict):
        return data.get("block", data.get("type"))
    return None
