"""Provider-neutral request and event types of the LLM layer.

A provider turns one `ChatRequest` into an async stream of `LLMEvent`s. The stream contract every
provider keeps (and the tests check):

- `TextDelta` / `ReasoningDelta` / `ToolCall*` events in wire order; a `ReasoningEnd` closes each
  reasoning block, a `ToolCallEnd` (with the parsed arguments) closes each tool call, after all
  of its `ToolCallDelta`s;
- then at most one `Usage`, then exactly one `Finish` as the very last event;
- or an `LLMError` is raised instead (possibly after some deltas). Providers never yield
  `Finish("cancelled")` or `Finish("error")`: those reasons describe turns recorded by
  `TurnBuilder` (see turn.py) that ended by cancellation or by an error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]
ThinkingLevel = Literal["low", "medium", "high"]

# Octavus `thinking: low|medium|high` token budgets; `True` means medium.
THINKING_BUDGETS: dict[ThinkingLevel, int] = {"low": 5_000, "medium": 10_000, "high": 20_000}
# Both OpenAI and Anthropic restrict function names to this.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class ToolCall(BaseModel):
    """A tool call the assistant made (kept on the assistant message for the next request)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReasoningPart(BaseModel):
    """One reasoning block of an assistant message.

    Anthropic requires thinking blocks to be sent back verbatim (with their `signature`, or the
    opaque `redacted` data) in the assistant turn that precedes tool results; OpenAI-compatible
    engines never get reasoning back (DeepSeek rejects it).
    """

    model_config = ConfigDict(frozen=True)

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


class ChatMessage(BaseModel):
    role: Role
    content: str = ""
    # assistant only
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reasoning: list[ReasoningPart] = Field(default_factory=list)
    # tool only: which call this answers, and the tool's name
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _role_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and (self.tool_calls or self.reasoning):
            raise ValueError("only assistant messages carry tool_calls or reasoning")
        return self


_CHAT_MESSAGE = frozenset({ChatMessage})  # what `ChatRequest` takes as made


class ToolSpec(BaseModel):
    """A function the model may call (OpenAI function format)."""

    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ChatRequest(BaseModel):
    # Empty means the provider's default model.
    model: str = ""
    messages: list[ChatMessage]
    tools: list[ToolSpec] = Field(default_factory=list)
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    # False/None: off; True: medium; a level; or an explicit token budget.
    thinking: bool | ThinkingLevel | Annotated[int, Field(ge=0)] | None = None

    @field_validator("messages", mode="wrap")
    @classmethod
    def _messages_made_already(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A list of `ChatMessage`s as it is (a copy): each was validated when it was made, and
        pydantic would run its model validator again for every one, ~0.25 µs a message, in every
        request, which carries the whole history (a session's, up to 100 messages; an Octavus
        thread's). Anything else (dicts, JSON, a subclass) is validated as usual."""
        if type(value) is list and set(map(type, value)) <= _CHAT_MESSAGE:
            return list(value)
        return handler(value)

    def thinking_budget(self) -> int | None:
        """The reasoning budget in tokens, or None when thinking is off."""
        t = self.thinking
        if t is None or t is False or t == 0:
            return None
        if t is True:
            return THINKING_BUDGETS["medium"]
        if isinstance(t, str):
            return THINKING_BUDGETS[t]
        return int(t)

    def thinking_level(self) -> ThinkingLevel | None:
        """The budget as a level, for engines that take `reasoning_effort`."""
        budget = self.thinking_budget()
        if budget is None:
            return None
        if isinstance(self.thinking, str):
            return self.thinking
        if budget <= THINKING_BUDGETS["low"]:
            return "low"
        return "medium" if budget <= THINKING_BUDGETS["medium"] else "high"


# Streamed events: small frozen dataclasses (one per token, so no validation cost).


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningEnd:
    """Closes a reasoning block; carries what must be echoed back (see `ReasoningPart`)."""

    text: str
    signature: str | None = None
    redacted: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    id: str
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    # The provider's own stop reason (e.g. "content_filter", "end_turn", "refusal"), when any.
    raw_reason: str | None = None


LLMEvent = (
    TextDelta | ReasoningDelta | ReasoningEnd | ToolCallStart | ToolCallDelta | ToolCallEnd | Usage | Finish
)


class LLMProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        """An async generator of events (see the module docstring for the contract).

        Cancelling the consuming task, or closing the generator (`contextlib.aclosing`), closes
        the underlying HTTP stream at once.
        """
        ...
