"""`OrderedReader` against a real nats-server: nats-py's ordered consumer, made by hand.

What a lost message looks like is made here by dropping one delivery on the client (what nats-py
does to a slow consumer): the reader must notice it from the next message's consumer sequence, or
from the next idle heartbeat when it was the last, and read on from the next stream sequence, so
everything arrives once and in order. A consumer the server lost (deleted here) stops its
heartbeats: the reader creates it again. A broker restart is in test_outages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.api import StreamConfig

from parley_common.bus import BusEvents
from parley_common.held_subscription import HeldSubscription
from parley_common.ordered_reader import OrderedReader, consumer_request, sequences
from parley_common.reply_inbox import reply_inbox
from parley_devstack.servers import NatsServer

STREAM = "READ"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[Client, str]]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    nc = await nats.connect(server.url)
    subject = f"read.{uuid.uuid4().hex[:8]}"
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["read.>"]))
    try:
        yield nc, subject
    finally:
        await nc.close()
        server.stop()


class Got:
    """What a reader handed on: (stream sequence, payload), in the order handed on."""

    def __init__(self) -> None:
        self.items: list[tuple[int, bytes]] = []

    async def __call__(self, msg: Msg) -> None:
        self.items.append((msg.metadata.sequence.stream, msg.data))

    async def until(self, count: int, within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while len(self.items) < count:
                await asyncio.sleep(0.01)


class _Dropping:
    """A held subscription's pending messages that lose the first data message `which` picks."""

    def __init__(self, pending: Any, which: Callable[[Msg], bool]) -> None:
        self.pending, self.which, self.dropped = pending, which, list[int]()

    def put_nowait(self, msg: Msg) -> None:
        if not self.dropped and msg.data and self.which(msg):
            self.dropped.append(msg.metadata.sequence.stream)
            return
        self.pending.put_nowait(msg)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pending, name)


def _drop_once(reader: OrderedReader, which: Callable[[Msg], bool]) -> list[int]:
    """Make the reader's current subscription lose the first data message `which` picks (as
    nats-py drops a slow consumer's); returns the stream sequences dropped."""
    assert isinstance(reader._sub, HeldSubscription)
    dropping = _Dropping(reader._sub._pending_queue, which)
    reader._sub._pending_queue = dropping  # type: ignore[assignment]
    return dropping.dropped


@contextlib.asynccontextmanager
async def reading(nc: Client, subject: str, got: Got, after_seq: int = 0) -> AsyncIterator[OrderedReader]:
    reader = OrderedReader(nc, BusEvents(), stream=STREAM, subject=subject, on_msg=got, after_seq=after_seq)
    await reader.open()
    try:
        yield reader
    finally:
        await reader.close()


@pytest.fixture
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OrderedReader, "HEARTBEAT_S", 0.3)


async def _publish(nc: Client, subject: str, *payloads: bytes) -> None:
    js = nc.jetstream()
    for payload in payloads:
        await js.publish(subject, payload)


def test_the_consumer_is_the_one_nats_py_asks_for() -> None:
    config = api.ConsumerConfig(opt_start_seq=7)
    config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
    config.deliver_subject, config.filter_subject = "_INBOX.x", "read.s"
    # js.subscribe(ordered_consumer=True)'s settings (nats/js/client.py)
    config.flow_control, config.ack_policy, config.max_deliver = True, api.AckPolicy.NONE, 1
    config.ack_wait, config.idle_heartbeat, config.num_replicas, config.mem_storage = 22 * 3600, 5, 1, True
    theirs = config.as_dict()
    theirs.pop("inactive_threshold")  # 0: the server's default for an ephemeral, as when absent
    ours = json.loads(consumer_request("READ", "read.s", "_INBOX.x", 7, 5.0))
    assert ours == {"stream_name": "READ", "config": theirs}


def test_sequences_come_from_either_form_of_the_ack_subject() -> None:
    assert sequences("$JS.ACK.S.C.1.42.7.1700000000000000000.0") == (42, 7)
    assert sequences("$JS.ACK.dom.hash.S.C.1.42.7.1700000000000000000.0.tok") == (42, 7)
    assert sequences("_INBOX.abc") is None
    assert sequences("$JS.ACK.S.C.1.x.7.1.0") is None


async def test_it_reads_in_order_from_after_seq_and_holds_no_task(client: tuple[Client, str]) -> None:
    nc, subject = client
    await _publish(nc, subject, b"a", b"b", b"c")
    got = Got()
    await reply_inbox(nc)  # the connection's, made at its first JetStream request: not the reader's
    tasks_before = len(asyncio.all_tasks())
    async with reading(nc, subject, got, after_seq=1):
        await got.until(2)
        await _publish(nc, subject, b"d")
        await got.until(3)
        assert got.items == [(2, b"b"), (3, b"c"), (4, b"d")]
        await asyncio.sleep(0.05)  # the burst's delivery task ends
        assert len(asyncio.all_tasks()) == tasks_before  # nats-py's queue task and two more: gone


async def test_a_message_lost_on_the_way_is_read_again_from_the_stream(client: tuple[Client, str]) -> None:
    nc, subject = client
    got = Got()
    async with reading(nc, subject, got) as reader:
        dropped = _drop_once(reader, lambda msg: msg.data == b"2")
        await _publish(nc, subject, *(str(n).encode() for n in range(1, 6)))
        await got.until(5)
        await asyncio.sleep(0.2)
        assert dropped == [2]
        assert got.items == [(n, str(n).encode()) for n in range(1, 6)]  # once each, in order


@pytest.mark.usefixtures("fast_heartbeats")
async def test_a_lost_last_message_is_noticed_at_the_next_heartbeat(client: tuple[Client, str]) -> None:
    nc, subject = client
    got = Got()
    async with reading(nc, subject, got) as reader:
        dropped = _drop_once(reader, lambda msg: msg.data == b"last")
        await _publish(nc, subject, b"first", b"last")
        await got.until(2, within_s=5)  # nothing more comes: only the heartbeat tells
        assert dropped == [2]
        assert got.items == [(1, b"first"), (2, b"last")]


@pytest.mark.usefixtures("fast_heartbeats")
async def test_a_consumer_the_server_lost_is_created_again(client: tuple[Client, str]) -> None:
    nc, subject = client
    got = Got()
    async with reading(nc, subject, got):
        await _publish(nc, subject, b"one")
        await got.until(1)
        js = nc.jetstream()
        for name in (await js.consumers_info(STREAM)) or []:
            await js.delete_consumer(STREAM, name.name)
        await _publish(nc, subject, b"two")  # no consumer: only a new one reads it
        await got.until(2, within_s=5)  # two heartbeat intervals without one, then read again
        assert got.items == [(1, b"one"), (2, b"two")]


async def test_closing_leaves_no_consumer_and_no_timer(client: tuple[Client, str]) -> None:
    nc, subject = client
    reader = OrderedReader(nc, BusEvents(), stream=STREAM, subject=subject, on_msg=Got())
    await reader.open()
    assert reader._look is not None
    await reader.close()
    assert reader._look is None and reader._sub is None
    async with asyncio.timeout(10):  # the server reaps an ephemeral consumer nobody listens to
        while await nc.jetstream().consumers_info(STREAM):
            await asyncio.sleep(0.2)
