"""`Flag`: what `asyncio.Event` does for a connection or a session, without its eager deque.

Python 3.11's `asyncio.Event` makes a `collections.deque` for its waiters when it is made, and an
empty deque takes 760 bytes. A gateway socket held two events and a runtime session one, all its
life, most of them never waited on by more than one task (docs/performance.md, "Memory: the
primitives a held session keeps"). A `Flag` keeps its waiters in a list made at the first `wait`.
"""

from __future__ import annotations

import asyncio


class Flag:
    """`set`, `clear`, `is_set` and `wait` as `asyncio.Event` has them: `wait` returns True once the
    flag is set (at once if it is), and every waiter is woken by `set`; a cancelled wait leaves no
    waiter behind."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)  # cancelled: set() never came for it
