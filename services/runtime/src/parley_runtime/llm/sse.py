"""Server-sent events over an httpx streaming response (the subset LLM APIs use)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx

from parley_runtime.llm.errors import LLMError, transport_error

# Bound on reading the end of a body after the final event (normally already received).
DRAIN_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


async def sse_events(response: httpx.Response, provider: str) -> AsyncGenerator[SSEEvent, None]:
    """Parse `event:`/`data:` fields into events; network failures become `LLMError`s.

    httpx reassembles lines (and UTF-8 characters) split across network reads. A final event
    without its blank line is still delivered: some servers omit it after `[DONE]`.
    """
    event, data = "", list[str]()
    try:
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield SSEEvent(event or "message", "\n".join(data))
                event, data = "", list[str]()
                continue
            if line.startswith(":"):  # comment / keep-alive
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc, before_response=False) from exc
    if data:
        yield SSEEvent(event or "message", "\n".join(data))


async def drain_rest(events: AsyncGenerator[SSEEvent, None]) -> None:
    """Read what follows the final event (the end of the chunked body), so the connection goes
    back to the pool instead of being closed. The answer is complete: failures are ignored."""
    with contextlib.suppress(LLMError, TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in events:
                pass
