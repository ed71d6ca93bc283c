"""Folding a provider stream into the assistant turn it produced."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from parley_runtime.llm.errors import LLMError
from parley_runtime.llm.types import (
    ChatMessage,
    Finish,
    FinishReason,
    LLMEvent,
    ReasoningEnd,
    ReasoningPart,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    Usage,
)


@dataclass
class Turn:
    message: ChatMessage  # role "assistant": text, completed tool calls, reasoning blocks
    finish: FinishReason
    raw_finish: str | None = None
    usage: Usage | None = None
    error: LLMError | None = None


@dataclass
class TurnBuilder:
    """Feed it every event; `turn()` at the end, or `turn("cancelled")` / `turn("error", err)`
    for a turn cut short (barge-in, failure): it then holds what was streamed so far, without
    the tool calls that never completed."""

    _text: list[str] = field(default_factory=list)
    _calls: list[ToolCall] = field(default_factory=list)
    _reasoning: list[ReasoningPart] = field(default_factory=list)
    _usage: Usage | None = None
    _finish: Finish | None = None

    def add(self, event: LLMEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallEnd):
            self._calls.append(ToolCall(id=event.id, name=event.name, arguments=event.arguments))
        elif isinstance(event, ReasoningEnd):
            self._reasoning.append(
                ReasoningPart(text=event.text, signature=event.signature, redacted=event.redacted)
            )
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Finish):
            self._finish = event

    @property
    def text(self) -> str:
        return "".join(self._text)

    def turn(self, cut: FinishReason | None = None, error: LLMError | None = None) -> Turn:
        finish = self._finish
        reason: FinishReason = cut or (finish.reason if finish else "error")
        message = ChatMessage(
            role="assistant", content=self.text, tool_calls=self._calls, reasoning=self._reasoning
        )
        return Turn(message, reason, finish.raw_reason if finish and not cut else None, self._usage, error)


async def collect(events: AsyncGenerator[LLMEvent, None]) -> Turn:
    """Consume a whole stream. An `LLMError` gives a turn with finish "error" that keeps the
    partial output; cancellation propagates (the stream is closed on the way out)."""
    builder = TurnBuilder()
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                builder.add(event)
    except LLMError as exc:
        return builder.turn("error", exc)
    return builder.turn()
