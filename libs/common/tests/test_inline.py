"""Inline subscriptions against a real nats-server: handled in the read loop, in order, with no
task per subscription; a handler's work that has to wait keeps its place."""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from parley_common.bus import BusEvents
from parley_common.inline import start_eagerly, subscribe_inline, subscribe_sequenced
from parley_common.numbered import NumberedReader
from parley_devstack.servers import NatsServer


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    server = NatsServer(tmp_path / "nats", log_path=tmp_path / "nats.log")
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    client = await nats.connect(server.url)
    try:
        yield client
    finally:
        await client.close()
        server.stop()


async def _until(probe: Callable[[], bool], timeout: float = 5) -> None:
    async def wait() -> None:
        while not probe():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def test_an_inline_subscription_has_no_task_and_gets_each_message_in_order(nc: Client) -> None:
    got: list[bytes] = []
    plain: list[bytes] = []
    sub = await subscribe_inline(nc, "inline.a", lambda subject, data, headers: got.append(data))

    async def cb(msg: Any) -> None:
        plain.append(msg.data)

    await nc.subscribe("inline.b", cb=cb)  # the others still go through nats-py
    assert sub._sub._wait_for_msgs_task is None
    for i in range(20):
        await nc.publish("inline.a", str(i).encode(), headers={"Nats-Msg-Id": str(i)} if i % 2 else None)
    await nc.publish("inline.b", b"b")
    await _until(lambda: len(got) == 20 and plain == [b"b"])
    assert got == [str(i).encode() for i in range(20)]
    await sub.unsubscribe()
    await nc.publish("inline.a", b"late")
    await nc.flush()
    await asyncio.sleep(0.05)
    assert len(got) == 20


async def test_sequenced_work_that_waits_holds_the_next_in_order(nc: Client) -> None:
    got: list[int] = []
    gate = asyncio.Event()

    async def handle(n: int) -> None:
        if n == 1:
            await gate.wait()
        got.append(n)

    sub = await subscribe_sequenced(nc, "inline.seq", lambda data: handle(int(data)))
    for n in (0, 1, 2, 3):
        await nc.publish("inline.seq", str(n).encode())
    await _until(lambda: got == [0])
    await asyncio.sleep(0.05)
    assert got == [0]  # 1 waits, and 2 and 3 after it
    gate.set()
    await _until(lambda: got == [0, 1, 2, 3])
    await sub.unsubscribe()


async def test_a_numbered_delivery_that_waits_keeps_its_place(nc: Client) -> None:
    got: list[int] = []
    gate = asyncio.Event()

    async def deliver(item: dict[str, int]) -> None:
        if item["index"] == 2:
            await gate.wait()  # a socket whose buffer is full
        got.append(item["index"])

    subject = f"inline.{uuid.uuid4().hex[:8]}.out"
    reader: NumberedReader[dict[str, int]] = NumberedReader(
        nc,
        BusEvents(),
        stream="UNUSED",
        subject=subject,
        decode=json.loads,
        index_of=lambda item: item["index"],
        deliver=deliver,
    )
    await reader.open(catch_up=False)
    for index in (1, 2, 3, 4):
        await nc.publish(subject, json.dumps({"index": index}).encode())
    await _until(lambda: got == [1])
    await asyncio.sleep(0.05)
    assert got == [1] and len(reader._waiting) == 3  # 2 waits on the socket, 3 and 4 on the lock
    gate.set()
    await _until(lambda: got == [1, 2, 3, 4])
    await reader.close()


async def test_an_eager_start_runs_at_once_and_a_suspended_one_can_be_cancelled() -> None:
    seen: list[str] = []
    never = asyncio.get_running_loop().create_future()

    async def quick() -> None:
        seen.append("quick")

    async def waits() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    assert start_eagerly(quick(), contextvars.copy_context()) is None
    assert seen == ["quick"]  # ran before start_eagerly returned
    task = start_eagerly(waits(), contextvars.copy_context())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    assert seen == ["quick", "cancelled"] and task.cancelled()
