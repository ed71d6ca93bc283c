"""Retries, timeouts, cut streams and cancellation, for both HTTP providers against their fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import pytest

from parley_common.errors import Codes
from parley_runtime.llm import AnthropicProvider, HttpOptions, LLMProvider, OpenAICompatProvider, TextDelta

from .fakes import (
    Cut,
    FakeAnthropic,
    FakeOpenAI,
    FakeServer,
    Reply,
    Seen,
    Stall,
    anthropic_error,
    anthropic_text,
    openai_error,
    openai_text,
    truncate,
)
from .support import FAST, HELLO, KEY, cancel_when, drain, drain_error, text_of, tracked

# Deadline for "the HTTP stream is closed promptly" after cancelling or closing.
CLOSE_DEADLINE_S = 0.2


@dataclass(frozen=True)
class Kind:
    name: str
    fake: Callable[..., FakeServer]
    provider: Callable[[FakeServer, HttpOptions], LLMProvider]
    text: Callable[[list[str]], Reply]
    error: Callable[..., Reply]  # (status, headers=None) -> an error reply in the provider's shape


OPENAI = Kind(
    "openai",
    lambda replies: FakeOpenAI(replies, api_key=KEY),
    lambda fake, opts: tracked(
        OpenAICompatProvider(name="openai", base_url=fake.base_url, api_key=KEY, options=opts)
    ),
    lambda pieces: openai_text(pieces),
    lambda status, headers=None, type="server_error": openai_error(
        status, "upstream says no", type=type, headers=headers
    ),
)
ANTHROPIC = Kind(
    "anthropic",
    lambda replies: FakeAnthropic(replies, api_key=KEY),
    lambda fake, opts: tracked(
        AnthropicProvider(api_key=KEY, base_url=fake.base_url, default_model="claude-fake", options=opts)
    ),
    lambda pieces: anthropic_text(pieces),
    lambda status, headers=None, type="api_error": anthropic_error(status, type, "upstream says no", headers),
)
KINDS = pytest.mark.parametrize("kind", [OPENAI, ANTHROPIC], ids=lambda k: k.name)

# Enough of each provider's text stream to carry "Hel" and "lo" (then the scripted cut/stall).
PREFIX = {"openai": 3, "anthropic": 5}


async def left(fake: FakeServer, since: float) -> Seen:
    """The first request, whose client the server saw leave within the deadline after `since`."""
    seen = fake.requests[0]
    assert await asyncio.to_thread(seen.disconnected.wait, 2.0), "the server never saw the client leave"
    assert seen.disconnected_at is not None
    assert seen.disconnected_at - since < CLOSE_DEADLINE_S
    return seen


@KINDS
async def test_retries_5xx_before_the_first_byte_then_streams(kind: Kind) -> None:
    with kind.fake([kind.error(500), kind.error(503), kind.text(["Hello"])]) as fake:
        events = await drain(kind.provider(fake, FAST).stream(HELLO))
    assert text_of(events) == "Hello"
    assert len(fake.requests) == 3


@KINDS
async def test_gives_up_after_max_attempts(kind: Kind) -> None:
    with kind.fake([kind.error(502)] * 5) as fake:
        _, err = await drain_error(kind.provider(fake, FAST).stream(HELLO))
    assert err.code is Codes.LLM_UNAVAILABLE and err.upstream_status == 502
    assert len(fake.requests) == FAST.max_attempts


@KINDS
async def test_429_waits_for_retry_after_then_succeeds(kind: Kind) -> None:
    limited = kind.error(429, {"retry-after-ms": "150", "retry-after": "1"}, type="rate_limit_error")
    with kind.fake([limited, kind.text(["ok"])]) as fake:
        events = await drain(kind.provider(fake, FAST).stream(HELLO))
    assert text_of(events) == "ok"
    first, second = fake.requests
    assert second.received_at - first.received_at >= 0.14  # honoured the 150 ms, not the 10 ms backoff


@KINDS
async def test_429_exhausted_reports_rate_limited_with_retry_after(kind: Kind) -> None:
    limited = kind.error(429, {"retry-after": "0"}, type="rate_limit_error")
    with kind.fake([limited] * 3) as fake:
        _, err = await drain_error(kind.provider(fake, FAST).stream(HELLO))
    assert err.code is Codes.LLM_RATE_LIMITED and err.retry_after == 0
    assert err.envelope().params == {"provider": kind.name, "retry_after": 0.0, "upstream_status": 429}
    assert len(fake.requests) == 3


@KINDS
async def test_a_retry_after_beyond_the_cap_fails_at_once(kind: Kind) -> None:
    with kind.fake([kind.error(429, {"retry-after": "120"}, type="rate_limit_error")]) as fake:
        _, err = await drain_error(kind.provider(fake, FAST).stream(HELLO))
    assert err.code is Codes.LLM_RATE_LIMITED and err.retry_after == 120
    assert err.headers == {"Retry-After": "120"}
    assert len(fake.requests) == 1


@KINDS
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Codes.LLM_BAD_REQUEST),
        (401, Codes.LLM_AUTH_FAILED),
        (403, Codes.LLM_AUTH_FAILED),
        (404, Codes.LLM_BAD_REQUEST),
    ],
)
async def test_client_errors_map_to_codes_and_are_not_retried(kind: Kind, status: int, code: Any) -> None:
    with kind.fake([kind.error(status, type="invalid_request_error")]) as fake:
        _, err = await drain_error(kind.provider(fake, FAST).stream(HELLO))
    assert err.code is code and err.upstream_status == status and err.provider == kind.name
    assert "upstream says no" in (err.detail or "")  # for logs...
    assert "upstream says no" not in err.message  # ...never for clients
    assert len(fake.requests) == 1


async def test_an_exhausted_quota_is_not_retried() -> None:
    reply = OPENAI.error(429, type="insufficient_quota")
    with OPENAI.fake([reply] * 3) as fake:
        _, err = await drain_error(OPENAI.provider(fake, FAST).stream(HELLO))
    assert err.code is Codes.LLM_RATE_LIMITED and len(fake.requests) == 1


@KINDS
async def test_a_stream_cut_after_output_started_is_not_retried(kind: Kind) -> None:
    cut = truncate(kind.text(["Hel", "lo", " world"]), PREFIX[kind.name], Cut())
    with kind.fake([cut, kind.text(["never sent"])]) as fake:
        events, err = await drain_error(kind.provider(fake, FAST).stream(HELLO))
    assert text_of(events) == "Hello"
    assert err.code is Codes.LLM_UNAVAILABLE
    assert len(fake.requests) == 1 and fake.requests[0].cut


@KINDS
async def test_connection_refused_is_retried_then_unavailable(kind: Kind) -> None:
    with kind.fake([]) as fake:
        provider = kind.provider(fake, FAST)
    # The fake is stopped: its port refuses connections now.
    started = time.monotonic()
    _, err = await drain_error(provider.stream(HELLO))
    assert err.code is Codes.LLM_UNAVAILABLE and err.retryable
    assert time.monotonic() - started < 2


@KINDS
async def test_read_timeout_when_the_stream_stalls(kind: Kind) -> None:
    options = replace(FAST, read_timeout_s=0.3)
    stalled = truncate(kind.text(["Hel", "lo", " world"]), PREFIX[kind.name], Stall())
    with kind.fake([stalled]) as fake:
        started = time.monotonic()
        events, err = await drain_error(kind.provider(fake, options).stream(HELLO))
        elapsed = time.monotonic() - started
        seen = fake.requests[0]
        assert await asyncio.to_thread(seen.disconnected.wait, 2.0), "the server never saw the client leave"
    assert text_of(events) == "Hello"
    assert err.code is Codes.LLM_TIMEOUT
    assert 0.3 <= elapsed < 2.0
    assert len(fake.requests) == 1


@KINDS
async def test_cancelling_the_consuming_task_closes_the_stream_promptly(kind: Kind) -> None:
    stalled = truncate(kind.text(["Hel", "lo"]), PREFIX[kind.name], Stall())
    with kind.fake([stalled]) as fake:
        got_text = asyncio.Event()
        received: list[Any] = []

        async def consume() -> None:
            async for event in kind.provider(fake, FAST).stream(HELLO):
                received.append(event)
                if isinstance(event, TextDelta) and event.text == "lo":
                    got_text.set()

        cancelled_at = await cancel_when(got_text, asyncio.create_task(consume()))
        seen = await left(fake, cancelled_at)
    assert not seen.completed.is_set()


@KINDS
async def test_cancelling_a_task_busy_elsewhere_still_closes_the_stream(kind: Kind) -> None:
    # The consumer holds the stream but waits on something else when cancelled: the abandoned
    # generator is finalized by the event loop, which closes the HTTP stream.
    stalled = truncate(kind.text(["Hel", "lo"]), PREFIX[kind.name], Stall())
    with kind.fake([stalled]) as fake:
        holding = asyncio.Event()

        async def consume() -> None:
            stream = kind.provider(fake, FAST).stream(HELLO)
            await anext(stream)
            holding.set()
            await asyncio.Event().wait()  # e.g. waiting for TTS to drain

        await left(fake, await cancel_when(holding, asyncio.create_task(consume())))


@KINDS
async def test_breaking_out_with_aclosing_closes_the_stream(kind: Kind) -> None:
    stalled = truncate(kind.text(["Hel", "lo"]), PREFIX[kind.name], Stall())
    with kind.fake([stalled]) as fake:
        async with aclosing(kind.provider(fake, FAST).stream(HELLO)) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    break
        await left(fake, time.monotonic())


@KINDS
async def test_the_connection_is_reused_after_a_complete_stream(kind: Kind) -> None:
    with kind.fake([kind.text(["one"]), kind.text(["two"])]) as fake:
        provider = kind.provider(fake, FAST)
        first = await drain(provider.stream(HELLO))
        second = await drain(provider.stream(HELLO))
    assert (text_of(first), text_of(second)) == ("one", "two")
    assert fake.requests[0].peer == fake.requests[1].peer  # one pooled connection, not leaked
