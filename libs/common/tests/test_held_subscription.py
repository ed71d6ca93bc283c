"""`subscribe_held` against a real nats-server: nats-py's delivery (in order, one at a time, errors
to the error callback, the pending limit, unsubscribe, drain, a server restart), without a queue or
task while the subscription is quiet."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError

from parley_common.held_subscription import subscribe_held
from parley_devstack.servers import NatsServer
from parley_devstack.testing import subscribed


class Errors:
    def __init__(self) -> None:
        self.seen: list[Exception] = []

    async def report(self, exc: Exception) -> None:
        self.seen.append(exc)


class Gated:
    """A callback that waits for `gate` before it takes each message."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.gate = asyncio.Event()

    async def on(self, msg: Msg) -> None:
        await self.gate.wait()
        self.got.append(msg.data)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", log_path=tmp_path / "nats.log")
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def errors() -> Errors:
    return Errors()


@pytest.fixture
async def nc(server: NatsServer, errors: Errors) -> AsyncIterator[Client]:
    nc = await nats.connect(
        server.url, error_cb=errors.report, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        yield nc
    finally:
        if not nc.is_closed:
            await nc.close()


async def _until(probe: object, timeout: float = 5) -> None:
    async def wait() -> None:
        while not probe():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_messages_come_in_order_one_at_a_time_and_a_slow_one_holds_back_only_its_own(
    nc: Client,
) -> None:
    got: list[tuple[str, bytes]] = []
    gate = asyncio.Event()

    async def slow(msg: Msg) -> None:
        if msg.data == b"1":
            await gate.wait()  # the next message of this subscription waits for this one
        got.append(("slow", msg.data))

    async def quick(msg: Msg) -> None:
        got.append(("quick", msg.data))

    await subscribe_held(nc, "held.slow", slow)
    await subscribe_held(nc, "held.quick", quick)
    for i in range(1, 4):
        await nc.publish("held.slow", str(i).encode())
        await nc.publish("held.quick", str(i).encode())
    await _until(lambda: len(got) == 3)
    assert got == [("quick", b"1"), ("quick", b"2"), ("quick", b"3")]
    gate.set()
    await _until(lambda: len(got) == 6)
    assert [d for who, d in got if who == "slow"] == [b"1", b"2", b"3"]


async def test_a_quiet_subscription_keeps_no_queue_and_no_task(nc: Client) -> None:
    got: list[bytes] = []

    async def on(msg: Msg) -> None:
        got.append(msg.data)

    sub = await subscribe_held(nc, "held.quiet", on)
    await nc.publish("held.quiet", b"x")
    await _until(lambda: got == [b"x"])
    await asyncio.sleep(0)  # the delivery task's end
    assert sub._wait_for_msgs_task is None
    assert not [t for t in asyncio.all_tasks() if "_deliver" in repr(t.get_coro())]
    gc.collect()
    held = gc.get_referents(sub, *gc.get_referents(sub))
    assert not [o for o in held if isinstance(o, asyncio.Queue | asyncio.Task | asyncio.Event)]
    # And the same subscription goes on after being quiet.
    await nc.publish("held.quiet", b"y")
    await _until(lambda: got == [b"x", b"y"])


async def test_a_callbacks_error_goes_to_the_error_callback_and_delivery_goes_on(
    nc: Client, errors: Errors
) -> None:
    got: list[bytes] = []

    async def on(msg: Msg) -> None:
        if msg.data == b"bad":
            raise ValueError("bad message")
        got.append(msg.data)

    await subscribe_held(nc, "held.errors", on)
    for data in (b"a", b"bad", b"b"):
        await nc.publish("held.errors", data)
    await _until(lambda: got == [b"a", b"b"])
    assert [str(e) for e in errors.seen] == ["bad message"]


async def test_a_callbacks_own_cancellation_does_not_end_the_subscription(nc: Client) -> None:
    got: list[bytes] = []

    async def on(msg: Msg) -> None:
        if msg.data == b"cancelled":
            never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            never.cancel()
            await never  # raises CancelledError in the callback; its task is not being cancelled
        got.append(msg.data)

    await subscribe_held(nc, "held.cancelled", on)
    for data in (b"a", b"cancelled", b"b"):
        await nc.publish("held.cancelled", data)
    await _until(lambda: got == [b"a", b"b"])


async def test_past_its_pending_limit_a_subscription_drops_and_reports_a_slow_consumer(
    nc: Client, errors: Errors
) -> None:
    gated = Gated()
    got, gate = gated.got, gated.gate
    told: list[int] = []  # `on_dropped`, once per message dropped
    await subscribe_held(
        nc, "held.limit", gated.on, pending_msgs_limit=2, on_dropped=lambda: told.append(len(got))
    )
    for i in range(5):
        await nc.publish("held.limit", str(i).encode())
    await _until(lambda: any(isinstance(e, SlowConsumerError) for e in errors.seen))
    gate.set()
    await nc.flush()
    dropped = sum(isinstance(e, SlowConsumerError) for e in errors.seen)
    # Each message is delivered, in order, or dropped and reported: at most the one under way
    # and two pending were kept.
    await _until(lambda: len(got) + dropped == 5)
    await asyncio.sleep(0.1)
    assert 2 <= len(got) <= 3 and got == sorted(got) and len(got) + dropped == 5
    assert len(told) == dropped


async def test_unsubscribe_ends_delivery_and_drain_waits_for_what_is_pending(
    nc: Client, server: NatsServer
) -> None:
    gated = Gated()
    got, gate, on = gated.got, gated.gate, gated.on
    sub = await subscribe_held(nc, "held.unsub", on)
    await nc.publish("held.unsub", b"dropped")
    await _until(lambda: sub._wait_for_msgs_task is not None)
    await sub.unsubscribe()  # the delivery under way is cancelled, as nats-py's task would be
    gate.set()
    await nc.publish("held.unsub", b"after")
    await nc.flush()
    await asyncio.sleep(0.1)
    assert got == [] and sub._wait_for_msgs_task is None

    gate.clear()
    await subscribe_held(nc, "held.drain", on)
    for data in (b"1", b"2"):
        await nc.publish("held.drain", data)
    await nc.flush()
    asyncio.get_running_loop().call_later(0.1, gate.set)
    await nc.drain()  # returns once both were delivered
    assert got == [b"1", b"2"]


async def test_a_subscription_comes_back_after_the_server_restarts(nc: Client, server: NatsServer) -> None:
    got: list[bytes] = []

    async def on(msg: Msg) -> None:
        got.append(msg.data)

    await subscribe_held(nc, "held.restart", on)
    server.stop()
    server.restart()
    await asyncio.to_thread(server.wait_ready, 30)
    await _until(lambda: nc.is_connected, timeout=10)
    await subscribed(nc)  # the SUB nats-py resends on reconnect has reached the server
    publisher = await nats.connect(server.url)
    try:
        await publisher.publish("held.restart", b"back")
        await publisher.flush()
    finally:
        await publisher.close()
    await _until(lambda: got == [b"back"])
