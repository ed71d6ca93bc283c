"""cancel_and_wait stops tasks, keeps quiet about their errors, and never eats its caller's cancel."""

from __future__ import annotations

import asyncio

import pytest

from parley_common import tasks
from parley_common.tasks import cancel_and_wait


async def test_cancels_and_waits_for_every_task() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def fails() -> None:
        raise ValueError("boom")

    a, b = asyncio.create_task(forever()), asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(a, None, b)
    assert a.cancelled() and b.done()


async def test_the_callers_own_cancellation_still_propagates() -> None:
    stubborn_started = asyncio.Event()

    async def stubborn() -> None:  # takes a while to stop (cleanup after a cancel)
        try:
            stubborn_started.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    inner = asyncio.create_task(stubborn())
    await stubborn_started.wait()
    caller = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.01)  # the caller is now waiting for `inner` to finish its cleanup
    caller.cancel()
    done, _ = await asyncio.wait([caller], timeout=1)
    assert caller in done and caller.cancelled()  # not swallowed: the caller stopped at once
    await asyncio.wait([inner])


async def test_a_task_that_lost_its_cancel_is_cancelled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11's `wait_for` can drop a cancel (its future completed in the same iteration): the
    task runs on as if never cancelled. It is cancelled again and the caller does not hang."""
    monkeypatch.setattr(tasks, "RECANCEL_S", 0.1, raising=False)
    started = asyncio.Event()
    lost = 0

    async def loses_one_cancel() -> None:
        nonlocal lost
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost += 1  # what wait_for does when the reply came back at the same moment
        await asyncio.sleep(3600)  # and runs on, waiting for the next input

    task = asyncio.create_task(loses_one_cancel())
    await started.wait()
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert lost == 1 and task.cancelled()
