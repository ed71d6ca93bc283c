"""Folding streams into turns, and mapping provider error bodies onto codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from parley_common.errors import Codes
from parley_runtime.llm import (
    BuiltinProvider,
    LLMError,
    TurnBuilder,
    collect,
)
from parley_runtime.llm import types as t
from parley_runtime.llm.errors import error_from_payload, error_from_status, parse_retry_after


async def events_then(*events: t.LLMEvent, error: LLMError | None = None) -> AsyncGenerator[t.LLMEvent, None]:
    for event in events:
        yield event
    if error is not None:
        raise error


async def test_collect_builds_the_assistant_message_for_the_next_request() -> None:
    turn = await collect(
        events_then(
            t.ReasoningEnd("plan", signature="s"),
            t.TextDelta("Checking "),
            t.TextDelta("now."),
            t.ToolCallStart("c1", "get_weather"),
            t.ToolCallEnd("c1", "get_weather", {"city": "Oslo"}),
            t.Usage(10, 5),
            t.Finish("tool_calls", "tool_use"),
        )
    )
    assert turn.message == t.ChatMessage(
        role="assistant",
        content="Checking now.",
        tool_calls=[t.ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"})],
        reasoning=[t.ReasoningPart(text="plan", signature="s")],
    )
    assert (turn.finish, turn.raw_finish, turn.usage, turn.error) == (
        "tool_calls",
        "tool_use",
        t.Usage(10, 5),
        None,
    )


async def test_collect_keeps_partial_output_of_a_failed_turn() -> None:
    err = LLMError(Codes.LLM_UNAVAILABLE, "openai", "cut")
    turn = await collect(events_then(t.TextDelta("Hel"), t.ToolCallStart("c", "f"), error=err))
    assert (turn.message.content, turn.message.tool_calls, turn.finish, turn.error) == (
        "Hel",
        [],
        "error",
        err,
    )


async def test_a_cancelled_turn_keeps_what_was_said() -> None:
    builder = TurnBuilder()
    stream = BuiltinProvider(pace_ms=0).stream(
        t.ChatRequest(messages=[t.ChatMessage(role="user", content="a b c")])
    )
    async for event in stream:
        builder.add(event)
        if builder.text == 'You said: "a ':
            break
    await stream.aclose()
    turn = builder.turn("cancelled")
    assert (turn.message.content, turn.finish, turn.raw_finish) == ('You said: "a ', "cancelled", None)


async def test_collect_propagates_cancellation_and_closes_the_stream() -> None:
    inside, closed = asyncio.Event(), asyncio.Event()

    async def hanging() -> AsyncGenerator[t.LLMEvent, None]:
        try:
            yield t.TextDelta("a")
            inside.set()
            await asyncio.Event().wait()
            yield t.TextDelta("never")
        finally:
            closed.set()

    task = asyncio.create_task(collect(hanging()))
    await asyncio.wait_for(inside.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(httpx.Headers({"retry-after": date})) or 0) <= 30
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None


@pytest.mark.parametrize(
    ("status", "body", "code", "detail"),
    [
        (
            400,
            b'[{"error": {"code": 400, "message": "bad model", "status": "INVALID_ARGUMENT"}}]',
            Codes.LLM_BAD_REQUEST,
            "bad model",
        ),
        (
            404,
            b'{"error": "model \\"llama9\\" not found, try pulling it first"}',
            Codes.LLM_BAD_REQUEST,
            "llama9",
        ),
        (
            422,
            b'{"object": "error", "message": "Extra inputs are not permitted", "type": "invalid_request"}',
            Codes.LLM_BAD_REQUEST,
            "Extra inputs",
        ),
        (422, b'{"detail": [{"loc": ["body", "x"], "msg": "extra"}]}', Codes.LLM_BAD_REQUEST, "extra"),
        (503, b"<html>Service Unavailable</html>", Codes.LLM_UNAVAILABLE, "Service Unavailable"),
        (504, b"", Codes.LLM_TIMEOUT, "HTTP 504"),
        (418, b"{}", Codes.LLM_BAD_REQUEST, "HTTP 418"),
    ],
    ids=[
        "gemini-list",
        "ollama-string",
        "mistral-flat",
        "mistral-detail",
        "html",
        "gateway-timeout",
        "teapot",
    ],
)
def test_error_bodies_of_the_engines(status: int, body: bytes, code: object, detail: str) -> None:
    err = error_from_status("x", status, httpx.Headers(), body)
    assert err.code is code and detail in (err.detail or "")
    assert err.retryable == (status in (503, 504))


def test_in_stream_error_payloads() -> None:
    assert (
        error_from_payload("a", {"type": "error", "error": {"type": "rate_limit_error"}}).code
        is Codes.LLM_RATE_LIMITED
    )
    assert error_from_payload("o", {"error": {"code": 401, "message": "no"}}).code is Codes.LLM_AUTH_FAILED
    assert error_from_payload("o", {"error": "boom"}).code is Codes.LLM_UNAVAILABLE
    assert not error_from_payload("o", {"error": {"type": "server_error"}}).retryable


def test_requests_validate_their_shape() -> None:
    with pytest.raises(ValueError, match="tool_call_id"):
        t.ChatMessage(role="tool", content="x")
    with pytest.raises(ValueError, match="only assistant"):
        t.ChatMessage(role="user", tool_calls=[t.ToolCall(id="c", name="f")])
    with pytest.raises(ValueError, match="pattern"):
        t.ToolSpec(name="has spaces")
    assert t.ChatRequest(messages=[], thinking=True).thinking_budget() == 10_000
    assert t.ChatRequest(messages=[], thinking=12_000).thinking_level() == "high"
    assert t.ChatRequest(messages=[], thinking=0).thinking_budget() is None
