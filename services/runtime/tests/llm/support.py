"""Helpers shared by the LLM tests (the fakes themselves are in fakes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol, TypeVar

import pytest

from parley_runtime.llm import (
    ChatMessage,
    ChatRequest,
    HttpOptions,
    LLMError,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)

KEY = "sk-test-key"
# Fast retries and short timeouts so failure paths finish in milliseconds.
FAST = HttpOptions(
    connect_timeout_s=1.0, read_timeout_s=3.0, max_attempts=3, retry_initial_s=0.01, retry_max_s=0.02
)

HELLO = ChatRequest(model="fake-model", messages=[ChatMessage(role="user", content="Hello?")])
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def weather_call_then(
    user_said: str, *, call_id: str, model: str, result: str | None = "sunny"
) -> ChatRequest:
    """A history in which the user spoke after the assistant called `get_weather` (voice
    barge-in), before its result (if any) was appended."""
    messages = [
        ChatMessage(role="user", content="Weather?"),
        ChatMessage(role="assistant", tool_calls=[ToolCall(id=call_id, name="get_weather")]),
        ChatMessage(role="user", content=user_said),
    ]
    if result is not None:
        messages.append(ChatMessage(role="tool", tool_call_id=call_id, content=result))
    return ChatRequest(model=model, messages=messages)


async def cancel_when(ready: asyncio.Event, task: asyncio.Task[None], timeout_s: float = 5) -> float:
    """Once `ready` is set, cancel `task` and see it end cancelled; returns when it was cancelled."""
    await asyncio.wait_for(ready.wait(), timeout_s)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return cancelled_at


async def drain(stream: AsyncGenerator[LLMEvent, None]) -> list[LLMEvent]:
    return [event async for event in stream]


async def drain_error(stream: AsyncGenerator[LLMEvent, None]) -> tuple[list[LLMEvent], LLMError]:
    """The events before the stream failed, and the error (fails the test if it did not)."""
    events: list[LLMEvent] = []
    try:
        async for event in stream:
            events.append(event)
    except LLMError as exc:
        return events, exc
    raise AssertionError(f"the stream ended without an LLMError: {events}")


def text_of(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


class _Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=_Closable)
_opened: list[_Closable] = []


def tracked(provider: C) -> C:
    """Close this provider (its HTTP client) when the test ends (see conftest.py)."""
    _opened.append(provider)
    return provider


async def close_tracked() -> None:
    while _opened:
        await _opened.pop().aclose()
