"""`run_step` alone: what a step returns, raises or swallows, and a cancelled caller."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from parley_common.kit.shutdown import run_step


async def test_a_step_that_ends_in_time_gives_its_result() -> None:
    async def handled() -> bool:
        await asyncio.sleep(0)
        return True

    with capture_logs() as logs:
        assert await run_step("handled", 1.0, handled) is True
    assert logs == []


async def test_what_an_overrun_step_raises_as_it_is_cancelled_is_its_overrun() -> None:
    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleaning up failed") from None

    with capture_logs() as logs:
        assert await run_step("stuck", 0.05, stuck) is False
    assert [e["event"] for e in logs] == ["shutdown.step_overran"]


async def test_a_step_that_swallows_its_cancel_is_left_running() -> None:
    released, cancels = asyncio.Event(), 0

    async def deaf() -> None:
        nonlocal cancels
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                cancels += 1

    with capture_logs() as logs:
        # In a task: a step awaited in the caller's own task would swallow a test's bound too.
        stopping = asyncio.create_task(run_step("deaf", 0.05, deaf))
        done, _ = await asyncio.wait({stopping}, timeout=1)
        released.set()
        returned = await stopping
    assert done, "run_step waited on a step that swallowed its cancel"
    assert returned is False
    assert [e["event"] for e in logs] == ["shutdown.step_overran", "shutdown.step_left_running"]
    assert cancels == 1
    await asyncio.sleep(0)


async def test_a_cancelled_caller_is_cancelled_and_so_is_its_step() -> None:
    entered, step_cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            step_cancelled.set()
            raise

    caller = asyncio.create_task(run_step("slow", 60, slow))
    await entered.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    async with asyncio.timeout(1):
        await step_cancelled.wait()
