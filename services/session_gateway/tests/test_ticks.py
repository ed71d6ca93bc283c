"""The gateway's one tick timer (ticks.py), and realtime ticks on it: each connection once per
interval, spread over it, the first one interval after joining; a connection whose socket stopped
taking frames holds up nobody else's ticks."""

from __future__ import annotations

import asyncio
import time

from parley_common.auth_contract import CredentialKind
from parley_common.session_contract import ServerTextDelta, ServerTurnComplete
from parley_session_gateway.ticks import SLOTS, Ticker

from .session_fakes import gateway, principal
from .test_realtime_connection import session

INTERVAL_S = 0.2


class Counted:
    def __init__(self, loop: asyncio.AbstractEventLoop, fail: bool = False) -> None:
        self.loop, self.fail = loop, fail
        self.at: list[float] = []
        self.told: list[float] = []  # the time each tick was told

    def tick(self, now: float) -> None:
        self.at.append(self.loop.time())
        self.told.append(now)
        if self.fail:
            raise RuntimeError("broken")


async def test_each_connection_once_per_interval_spread_over_it() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(INTERVAL_S)
    conns: list[Counted] = []
    for _ in range(SLOTS):  # one joins per slot visit
        conns.append(conn := Counted(loop))
        ticker.add(conn)
        await asyncio.sleep(INTERVAL_S / SLOTS)
    await asyncio.sleep(INTERVAL_S * 3)
    for conn in conns:
        gaps = [b - a for a, b in zip(conn.at, conn.at[1:], strict=False)]
        assert len(gaps) >= 2 and min(gaps) > INTERVAL_S / 2, gaps  # never twice in one interval
        assert INTERVAL_S * 0.8 < sum(gaps) / len(gaps) < INTERVAL_S * 1.5, gaps
    # Joined one after the other over an interval: ticked one after the other, not all at once.
    firsts = [c.at[0] for c in conns]
    assert firsts == sorted(firsts) and firsts[-1] - firsts[0] >= INTERVAL_S / 2
    for conn in conns:
        ticker.discard(conn)
    await asyncio.sleep(INTERVAL_S * 1.5)
    assert ticker._task is None  # no connection left: the timer stopped


async def test_a_group_is_told_one_time_the_wall_clocks() -> None:
    """The clock is read once per group visited: connections ticked together are told the same
    `now`, in Unix seconds, and a later visit tells a later one."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(INTERVAL_S)
    first, second = Counted(loop), Counted(loop)
    ticker.add(first)
    ticker.add(second)  # the same group
    async with asyncio.timeout(5):
        while len(second.told) < 2:
            await asyncio.sleep(0.01)
    assert first.told[:2] == second.told[:2]
    assert first.told[0] < first.told[1] and abs(first.told[1] - time.time()) < 1
    ticker.discard(first)
    ticker.discard(second)


async def test_the_first_tick_one_interval_after_joining_and_none_after_leaving() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(INTERVAL_S)
    early, late = Counted(loop), Counted(loop)
    ticker.add(early)
    await asyncio.sleep(INTERVAL_S * 0.55)
    joined = loop.time()
    ticker.add(late)
    async with asyncio.timeout(5):
        while not late.at:
            await asyncio.sleep(0.01)
    assert INTERVAL_S * 0.8 <= late.at[0] - joined <= INTERVAL_S * 2  # not at once: an interval on
    ticker.discard(late)
    ticked = len(late.at)
    await asyncio.sleep(INTERVAL_S * 1.5)
    assert len(late.at) == ticked and len(early.at) >= 3
    ticker.discard(early)


async def test_a_failing_tick_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(INTERVAL_S)
    broken, fine = Counted(loop, fail=True), Counted(loop)
    ticker.add(broken)
    ticker.add(fine)
    async with asyncio.timeout(10):  # (the unconfigured test logger renders each traceback slowly)
        while len(fine.at) < 3:
            await asyncio.sleep(INTERVAL_S / 4)
    assert len(broken.at) >= 2  # failed every time, ticked again every time
    ticker.discard(broken)
    ticker.discard(fine)


async def test_a_socket_that_stopped_taking_frames_holds_up_only_its_own_ticks() -> None:
    async with gateway(gateway_tick_interval_s=0.05) as (ctx, _, auth):
        async with (
            session(ctx, auth, principal(CredentialKind.SESSION)) as (stuck, stuck_ws),
            session(ctx, auth, principal(CredentialKind.SESSION)) as (fine, fine_ws),
        ):
            for conn, bridge in ((stuck, ctx.bridges[0]), (fine, ctx.bridges[1])):
                await bridge.control(conn.connection_id, deadline_s=60)
            assert ctx.ticks is not None and len(ctx.ticks) == 2  # one timer for both
            blocked = asyncio.Event()
            sends = 0

            async def never_returns(text: str) -> None:
                nonlocal sends
                sends += 1
                await blocked.wait()

            stuck_ws.send_text = never_returns  # type: ignore[method-assign]
            for _ in range(5):
                assert (await fine_ws.frame_of("tick"))["remaining_ms"] > 0
            assert sends == 1  # one tick waits on the stuck socket; none piled up behind it
            stuck_ws.drop()
            fine_ws.drop()
        assert len(ctx.ticks) == 0


async def test_a_tick_due_within_half_an_interval_may_come_early_and_the_next_an_interval_on() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(INTERVAL_S)
    conn = Counted(loop)
    ticker.add(conn)
    async with asyncio.timeout(5):
        while not conn.at:
            await asyncio.sleep(0.005)
    assert not ticker.tick_early(conn)  # just ticked: the next is a whole interval away
    await asyncio.sleep(INTERVAL_S * 0.65)
    early = loop.time()
    assert ticker.tick_early(conn)  # due within half an interval: the caller sends it now
    async with asyncio.timeout(5):
        while len(conn.at) < 2:
            await asyncio.sleep(0.005)
    assert conn.at[1] - early >= INTERVAL_S * 0.8  # the timer's next: an interval after the early one
    assert not ticker.tick_early(Counted(loop))  # not registered
    assert len(ticker) == 1
    ticker.discard(conn)


async def test_a_turns_end_brings_a_tick_due_soon_in_its_write() -> None:
    """A tick due within half an interval is sent right after `turn_complete`, with the new
    deadline (one write with it through corked_ws); one due later is left to the timer."""
    async with (
        gateway(gateway_tick_interval_s=0.5) as (ctx, _, auth),
        session(ctx, auth, principal(CredentialKind.SESSION)) as (conn, ws),
    ):
        bridge = ctx.last
        await bridge.control(conn.connection_id, deadline_s=600, index=0)
        await ws.frame_of("tick")  # the timer's
        loop = asyncio.get_running_loop()
        ticked = loop.time()
        await bridge.output(ServerTurnComplete(), deadline_s=400)  # the next tick is an interval away
        assert (await ws.frame())["type"] == "turn_complete"
        assert (await ws.frame())["type"] == "tick"
        assert loop.time() - ticked >= 0.4  # the timer's, not an early one
        await asyncio.sleep(0.3)  # the next tick is due within half an interval
        await bridge.output(ServerTextDelta(chunk="Hi"), deadline_s=3600)
        assert await ws.frame() == {"type": "text_delta", "chunk": "Hi"}
        ended = loop.time()
        await bridge.output(ServerTurnComplete(), deadline_s=300)
        assert (await ws.frame())["type"] == "turn_complete"
        tick = await ws.frame()
        assert tick["type"] == "tick" and 290_000 < tick["remaining_ms"] <= 300_000
        assert loop.time() - ended < 0.15  # at once, with the end
        await ws.frame_of("tick")
        assert loop.time() - ended >= 0.4  # the timer's next: an interval after the early one
        ws.drop()
