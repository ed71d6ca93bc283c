"""One timer per gateway for every realtime connection's `tick` (docs/realtime.md: every
`PARLEY_GATEWAY_TICK_INTERVAL_S`), instead of a sleeping task per connection.

A sleeping task costs each open connection 1.7 KiB and a timer of its own. The `Ticker` keeps the
connections in `SLOTS` groups and visits one group every `interval / SLOTS`, so each connection is
ticked once per interval and the sends of a second are spread over it (10,000 connections ticked
at the same instant would stall the event loop for every turn under way). A connection joins the
group visited last: its first tick comes one interval after it joined, as with its own timer. The
timer runs while any connection is registered.

What a tick sends is the connection's business (`Ticked.tick`, which must not block: a client that
stopped reading must hold up only its own frames). The clock is read once per group visited, and
each of the group's connections is told the time (`now`, Unix seconds).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

SLOTS = 10


class Ticked(Protocol):
    def tick(self, now: float) -> None:
        """Send this connection's periodic frame as of `now` (Unix seconds), without blocking."""


class Ticker:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._slots: list[dict[Ticked, None]] = [{} for _ in range(SLOTS)]  # insertion-ordered sets
        self._slot_of: dict[Ticked, int] = {}
        self._visited = 0  # the slot visited last
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, conn: Ticked) -> None:
        if conn in self._slot_of:
            return
        self._slots[self._visited][conn] = None
        self._slot_of[conn] = self._visited
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-ticks")

    def tick_early(self, conn: Ticked) -> bool:
        """True when `conn`'s next tick is due within half an interval: the caller sends it now
        (with other frames, in one write), and the one after comes an interval from now. Ticks
        only ever come earlier, never later, and no more often than without it."""
        slot = self._slot_of.get(conn)
        if slot is None:
            return False
        visits = (slot - self._visited) % SLOTS  # until its group is visited (0: a whole interval)
        if visits == 0 or visits > SLOTS // 2:
            return False
        self.discard(conn)
        self.add(conn)  # into the group visited last, as a connection that just joined
        return True

    def discard(self, conn: Ticked) -> None:
        slot = self._slot_of.pop(conn, None)
        if slot is not None:
            del self._slots[slot][conn]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        step = self.interval_s / SLOTS
        due = loop.time()
        try:
            while self._slot_of:
                due += step
                delay = due - loop.time()
                if delay < -step:  # the loop was held up: carry on from now instead of catching up
                    due, delay = loop.time(), 0.0
                await asyncio.sleep(max(delay, 0.0))
                self._visited = (self._visited + 1) % SLOTS
                now = time.time()
                for conn in list(self._slots[self._visited]):
                    try:
                        conn.tick(now)
                    except Exception:  # one connection's trouble must not stop the others' ticks
                        log.exception("gateway.tick_failed")
        finally:
            self._task = None  # the next connection added starts the timer again
