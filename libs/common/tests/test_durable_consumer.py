"""Stopping a `DurableConsumer` lets the batch under way finish and be acked instead of cancelling
it: a batch cut short leaves its messages unacked on the server until their ack wait (30 s) runs
out, so a consumer started right after would not see them for that long."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from parley_common.jetstream import DurableConsumer


class Gated(DurableConsumer):
    """Handles a message only once `gate` is opened, and records it."""

    def __init__(self, stream: str, subject: str) -> None:
        super().__init__(subject=subject, stream=stream, durable="gated")
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.seen: list[bytes] = []

    async def handle(self, msg: Msg) -> None:
        self.entered.set()
        await self.gate.wait()
        self.seen.append(msg.data)
        await self.ack(msg, applied=True)


async def test_a_batch_under_way_is_finished_and_acked_by_stop(infra: Any) -> None:
    stream = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"test.{stream}"
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    try:
        consumer = Gated(stream, subject)
        await consumer.start(nc)
        await js.publish(subject, b"one")
        await asyncio.wait_for(consumer.entered.wait(), timeout=10)
        stopping = asyncio.create_task(consumer.stop())
        await asyncio.sleep(0.2)
        consumer.gate.set()  # the handler finishes while stop() waits for it
        await stopping
        assert consumer.seen == [b"one"]
        await asyncio.sleep(0.2)  # the ack is a publish: let it reach the server
        info = await js.consumer_info(stream, "gated")
        assert (info.num_ack_pending, info.num_pending) == (0, 0)
    finally:
        await js.delete_stream(stream)
        await nc.close()
