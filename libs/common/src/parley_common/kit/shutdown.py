"""Shutdown steps bounded in time, so one stuck or failing step cannot keep a process from stopping.

A step whose exit never returned (it awaited a task that had lost its cancel, commit 2dd1a0b) held
the whole lifespan: the process hung, nothing said where, and the steps after it (the broker's
drain, closing Redis and the database) never ran. Here each step gets `timeout_s`; one that overruns
is cancelled and logged (`shutdown.step_overran`), one that raises is logged (`shutdown.step_failed`),
and either way the caller goes on with the next step. A cancellation of the caller still propagates.

The bound is `asyncio.timeout`, not `asyncio.wait_for`, which on Python 3.11 can swallow a cancel
(tasks.py). It cancels the step where it waits: a step that itself swallows that cancel and waits on
is not bounded (`tasks.cancel_and_wait` is how a step waits for its tasks without that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)


async def run_step(step: str, timeout_s: float, exit_: Callable[[], Awaitable[bool | None]]) -> bool:
    """Await `exit_()` for at most `timeout_s`; log, never raise, its overrun or failure.

    Returns what the step returned (a context manager's "exception handled"), False if it did not
    finish. Only the exception's type is logged: a message may carry a URL with its password.
    """
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            return bool(await exit_())
    except Exception as exc:
        if limit.expired():
            log.warning("shutdown.step_overran", step=step, timeout_s=timeout_s)
        else:
            log.warning("shutdown.step_failed", step=step, error=type(exc).__name__)
    return False


class BoundedExit(AbstractAsyncContextManager[None]):
    """`cm` entered as it is; its exit is one shutdown step (`run_step`)."""

    def __init__(self, cm: AbstractAsyncContextManager[None], step: str, timeout_s: float) -> None:
        self.cm, self.step, self.timeout_s = cm, step, timeout_s

    async def __aenter__(self) -> None:
        await self.cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await run_step(self.step, self.timeout_s, lambda: self.cm.__aexit__(exc_type, exc, tb))


def step_name(part: object) -> str:
    """A part's name for the log: its factory's qualified name (`build_app.<locals>.workers`)."""
    return getattr(part, "__qualname__", None) or repr(part)
