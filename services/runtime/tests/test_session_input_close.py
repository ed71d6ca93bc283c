"""A session's input feed once closed (sessions/inputs.py, `InputFeed.close`): no look after it,
whatever the look under way at the close does with its cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest

from parley_runtime.sessions import inputs as streams

from .sessions_support import Stack, stack


@pytest.fixture
async def rt(nats_url: str, infra: Any) -> AsyncIterator[Stack]:
    async with stack(nats_url, infra.redis_url) as value:
        yield value


async def test_a_look_that_loses_the_close_s_cancel_leaves_no_look_after_it(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read inside a look may lose the cancel of the feed's close (parley_common/tasks.py: a
    reply completing as the cancel arrives) and end as usual: the closed feed schedules no look
    after it, where it went on reading the stream for as long as the worker ran."""
    monkeypatch.setattr(streams, "RECHECKS_S", (0.05,))
    monkeypatch.setattr(streams, "RECHECK_EVERY_S", 0.05)
    deps = rt.deps()
    feed = streams.InputFeed(deps.nc, deps.events, uuid4(), deps.looks)
    calls = 0

    async def losing(patience_s: float) -> bool:
        nonlocal calls
        calls += 1
        with contextlib.suppress(asyncio.CancelledError):  # the cancel lost, the look ends as usual
            await asyncio.sleep(30)
        return False

    monkeypatch.setattr(feed, "_stored", losing)
    await feed.open(0, lazily=True)
    async with asyncio.timeout(5):
        while calls == 0:  # a look waits in its read
            await asyncio.sleep(0.01)
    await feed.close()
    await asyncio.sleep(0.3)  # six look intervals
    assert calls == 1
    assert feed._timer is None and feed._watch is None
