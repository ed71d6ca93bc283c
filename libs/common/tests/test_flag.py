"""`Flag` behaves as `asyncio.Event` where Parley uses one, and holds no deque while unused."""

from __future__ import annotations

import asyncio
import sys

import pytest

from parley_common.flag import Flag


async def test_a_flag_wakes_every_waiter_and_a_set_flag_does_not_wait() -> None:
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not flag.is_set() and not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set() and await flag.wait()
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flag.wait()


async def test_a_cancelled_wait_leaves_no_waiter_and_others_still_wake() -> None:
    flag = Flag()
    cancelled = asyncio.create_task(flag.wait())
    kept = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert flag._waiters is not None and len(flag._waiters) == 1
    flag.set()
    assert await kept
    assert flag._waiters is None


def test_an_unused_flag_is_far_smaller_than_an_event() -> None:
    event = asyncio.Event()
    event_bytes = sys.getsizeof(event) + sys.getsizeof(event.__dict__) + sys.getsizeof(event._waiters)
    assert sys.getsizeof(Flag()) * 5 < event_bytes
