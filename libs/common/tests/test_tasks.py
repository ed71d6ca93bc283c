"""cancel_and_wait stops tasks, keeps quiet about their errors, and never eats its caller's cancel."""

from __future__ import annotations

import asyncio

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
