"""Text deltas on their way to the client: sent at once, but never more often than every `window`.

A model's tokens often arrive in bursts (several SSE events in one read, or a local engine with no
pace at all). Each delta costs a bus message, a stored stream entry and a WebSocket frame, so the
deltas that arrive within `window` of the last one sent are merged into the next. The first delta
of an answer, and any after a pause, go out immediately. What is held back goes out with the first
chunk that arrives after the window has ended: a steady stream is sent as it arrives, without a
wake-up of its own (a process woken from idle pays for it: `python -m bench.wakeup`). If nothing
arrives, a timer sends it one window later, so held text is never later than twice the window.
What `close` sends (the answer's last text) goes to `send_last`, which the session runner holds
for the turn's end (one write for both, `Outlet.hold`), again for at most `window`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class DeltaCoalescer:
    """Per chunk, an append and a clock read; per window, a loop timer, not a task, that fires only
    when the stream pauses: an answer that ends within its window (the usual burst) flushes at
    `close`, and a steady stream flushes as its chunks arrive."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        window_s: float,
        send_last: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.send = send
        self.send_last = send_last or send  # what `close` sends (the answer's last text) goes here
        self.window_s = window_s
        self._pending: list[str] = []
        self._sent_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None  # a flush the timer started

    async def add(self, chunk: str) -> None:
        self._pending.append(chunk)
        wait = self._sent_at + self.window_s - time.monotonic()
        if wait <= 0:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            await self.flush()  # the window has ended: this chunk takes what was held with it
        elif self._timer is None:
            # Only if the stream pauses: one window after this one ends.
            self._timer = asyncio.get_running_loop().call_later(wait + self.window_s, self._window_ended)

    def _window_ended(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self, last: bool = False) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._sent_at = time.monotonic()
        await (self.send_last if last else self.send)(text)

    async def close(self) -> None:
        """Send what is held back; call when the answer ends (however it ends)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        flushing, self._flushing = self._flushing, None
        if flushing is not None and not flushing.done():
            await asyncio.shield(flushing)  # what it sends goes out before what follows
        await self.flush(last=True)
