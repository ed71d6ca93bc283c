"""Shutdown steps bounded in time, so one stuck or failing step cannot keep a process from stopping.

A step whose exit never returned (it awaited a task that had lost its cancel, commit 2dd1a0b) held
the whole lifespan: the process hung, nothing said where, and the steps after it (the broker's
drain, closing Redis and the database) never ran. Here each step gets `timeout_s`; one that overruns
is cancelled and logged (`shutdown.step_overran`), one that raises is logged (`shutdown.step_failed`),
and either way the caller goes on with the next step. A cancellation of the caller still propagates.

Each step runs as a task of its own, which the caller waits for with `asyncio.wait`: a step awaited
in the caller's task is bounded only if it lets the bound's cancel through, and one that swallows
it (`task.cancel(); with suppress(CancelledError): await task` in its own cancelled exit) and waits
on held the caller with it. Cancelled at its overrun, a step has a moment (`_grace_s`) to end, so its
clean-up still comes before the next step's; one still running after that is left behind, running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import structlog

from parley_common.tasks import RECANCEL_S

log = structlog.get_logger(__name__)


def _grace_s(timeout_s: float) -> float:
    """How long a step cancelled at its overrun may take to end before it is left behind."""
    return min(timeout_s, RECANCEL_S)


async def run_step(step: str, timeout_s: float, exit_: Callable[[], Awaitable[bool | None]]) -> bool:
    """Await `exit_()` for at most `timeout_s`; log, never raise, its overrun or failure.

    Returns what the step returned (a context manager's "exception handled"), False if it did not
    finish. Only the exception's type is logged: a message may carry a URL with its password.
    """
    task = asyncio.ensure_future(exit_())
    overran = False
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            overran = True
            log.warning("shutdown.step_overran", step=step, timeout_s=timeout_s)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=_grace_s(timeout_s))
    except asyncio.CancelledError:
        task.cancel()  # the caller is cancelled, and so is its step; the caller does not wait
        task.add_done_callback(_retrieve)
        raise
    if not done:  # it swallowed its cancel: it runs on, but no longer holds the stop
        log.warning("shutdown.step_left_running", step=step)
        task.add_done_callback(_retrieve)
        return False
    error = asyncio.CancelledError() if task.cancelled() else task.exception()
    if error is None:
        return bool(task.result())
    if not overran:  # what an overrun step raised as it was cancelled is its overrun's
        log.warning("shutdown.step_failed", step=step, error=type(error).__name__)
    if not isinstance(error, Exception | asyncio.CancelledError):
        raise error  # SystemExit, KeyboardInterrupt: not a step's failure
    return False


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a step left behind as looked at: no "exception was never retrieved" at its end."""
    if not task.cancelled():
        task.exception()


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
