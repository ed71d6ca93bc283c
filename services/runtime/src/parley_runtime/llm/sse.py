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


async def lines(response: httpx.Response) -> AsyncGenerator[str, None]:
    """The body's lines (ending in CR, LF or CRLF), whole and decoded, however the network split
    them. Split here on bytes rather than through httpx's `aiter_lines`, which stacks a text
    decoder and a line decoder (two more generators) on every chunk: a model's stream is a chunk
    per token. A line's end is ASCII, so a whole line never ends inside a UTF-8 character."""
    pending = b""
    async for chunk in response.aiter_bytes():
        pending += chunk
        if pending.endswith(b"\r"):  # maybe the first half of a CRLF: wait for what follows
            parts, pending = pending[:-1].splitlines(keepends=True), b"\r"
            if parts and not parts[-1].endswith((b"\n", b"\r")):
                pending = parts.pop() + pending
        else:
            parts = pending.splitlines(keepends=True)
            pending = parts.pop() if parts and not parts[-1].endswith((b"\n", b"\r")) else b""
        for part in parts:
            yield part.rstrip(b"\r\n").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r\n").decode("utf-8", "replace")


async def sse_events(response: httpx.Response, provider: str) -> AsyncGenerator[SSEEvent, None]:
    """Parse `event:`/`data:` fields into events; network failures become `LLMError`s.

    Lines (and UTF-8 characters) split across network reads are reassembled (`lines`). A final
    event without its blank line is still delivered: some servers omit it after `[DONE]`.
    """
    event, data = "", list[str]()
    try:
        async for line in lines(response):
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
