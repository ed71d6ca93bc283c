"""Stopping a background task without swallowing the caller's own cancellation.

`task.cancel(); with suppress(BaseException): await task` looks harmless but hides a hang: if the
*caller* is cancelled while it waits (a shutdown, a test's timeout), the CancelledError meant for it
is suppressed too and the caller runs on. `asyncio.wait` waits for the task without raising what
the task raised, while a cancellation of the caller still propagates.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel each task and wait until all have finished.

    What the tasks raise (their CancelledError included) is retrieved and dropped; a cancellation of
    the calling task is not.
    """
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    pending = [t for t in running if not t.done()]
    if pending:
        await asyncio.wait(pending)
    for task in running:
        if not task.cancelled():
            task.exception()  # mark retrieved: no "exception was never retrieved" warning
