"""Text deltas on their way to the client: sent at once, but never more often than every `window`.

A model's tokens often arrive in bursts (several SSE events in one read, or a local engine with no
pace at all). Each delta costs a bus message, a stored stream entry and a WebSocket frame, so the
deltas that arrive within `window` of the last one sent are merged into the next. The first delta
of an answer, and any after a pause, go out immediately; a delta held back goes out when the window
ends even if nothing follows, so a slow stream is never delayed by more than `window`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable


class DeltaCoalescer:
    def __init__(self, send: Callable[[str], Awaitable[None]], window_s: float) -> None:
        self.send = send
        self.window_s = window_s
        self._pending: list[str] = []
        self._sent_at = float("-inf")
        self._timer: asyncio.Task[None] | None = None

    async def add(self, chunk: str) -> None:
        self._pending.append(chunk)
        wait = self._sent_at + self.window_s - time.monotonic()
        if wait <= 0:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._sent_at = time.monotonic()
        await self.send(text)

    async def close(self) -> None:
        """Send what is held back; call when the answer ends (however it ends)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush()
