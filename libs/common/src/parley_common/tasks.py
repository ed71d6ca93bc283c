"""Stopping a background task without swallowing the caller's own cancellation.

`task.cancel(); with suppress(BaseException): await task` looks harmless but hides a hang: if the
*caller* is cancelled while it waits (a shutdown, a test's timeout), the CancelledError meant for it
is suppressed too and the caller runs on. `asyncio.wait` waits for the task without raising what
the task raised, while a cancellation of the caller still propagates.

A cancellation can also be lost inside the task: Python 3.11's `asyncio.wait_for` returns the
result, and drops the cancel, when the awaited future completes in the same loop iteration as the
cancel arrives (nats-py awaits its request replies and pull consumers' fetches through it; our own
JetStream requests no longer go through `nc.request`, reply_inbox.py). A session runner cancelled
just as its commit's ack came back then ran on, waiting for input, and the drain that cancelled it
waited forever. So a task still running `RECANCEL_S` after its cancel is cancelled again (and
logged).

Our own code waits with `async with asyncio.timeout(...)`, never `asyncio.wait_for`: an outside
cancel passes through it, and only its own expiry becomes a TimeoutError.
`libs/common/tests/test_no_wait_for.py` fails on any `asyncio.wait_for` in `libs/*/src` or
`services/*/src`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# How long a cancelled task may take to clean up before it is cancelled again: far beyond any
# cleanup here (closing a subscription, a last publish), short enough that a lost cancel is not felt.
RECANCEL_S = 2.0


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel each task and wait until all have finished.

    What the tasks raise (their CancelledError included) is retrieved and dropped; a cancellation of
    the calling task is not.
    """
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    pending = {t for t in running if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:  # its cancel was lost (see above), or its cleanup is stuck
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.warning("task.cancelled_again", task=name)
            task.cancel()
    for task in running:
        if not task.cancelled():
            task.exception()  # mark retrieved: no "exception was never retrieved" warning
