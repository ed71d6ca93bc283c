"""Stopping a `DurableConsumer` lets the batch under way finish and be acked instead of cancelling
it: a batch cut short leaves its messages unacked on the server until their ack wait (30 s) runs
out, so a consumer started right after would not see them for that long."""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg

from parley_common.jetstream import DurableConsumer

from .conftest import ScratchStream


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


async def test_a_batch_under_way_is_finished_and_acked_by_stop(scratch_stream: ScratchStream) -> None:
    js, stream, subject = scratch_stream.js, scratch_stream.name, scratch_stream.subject
    consumer = Gated(stream, subject)
    await consumer.start(scratch_stream.nc)
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


class Timed(DurableConsumer):
    """Records when each batch was handled and what it held."""

    def __init__(self, stream: str, subject: str, batch_wait_s: float) -> None:
        super().__init__(subject=subject, stream=stream, durable="timed")
        self.batch_wait_s = batch_wait_s
        self.batches: list[tuple[float, list[bytes]]] = []

    async def handle_batch(self, messages: list[Msg]) -> None:
        if messages:
            self.batches.append((time.monotonic(), [msg.data for msg in messages]))
        for msg in messages:
            await self.ack(msg, applied=True)

    def handled_at(self, data: bytes) -> float:
        return next(at for at, batch in self.batches if data in batch)


async def test_messages_gather_into_batches_under_load_and_come_at_once_after_a_quiet_spell(
    scratch_stream: ScratchStream,
) -> None:
    """`batch_wait_s` paces the batches under load; it does not delay a message that comes after a
    quiet spell, nor the next one (it used to follow every batch, whatever came before)."""
    js, subject = scratch_stream.js, scratch_stream.subject
    consumer = Timed(scratch_stream.name, subject, batch_wait_s=1.5)
    try:
        await consumer.start(scratch_stream.nc)
        await asyncio.sleep(1.7)  # quiet for longer than batch_wait_s
        for data in (b"alone", b"next"):
            sent = time.monotonic()
            await js.publish(subject, data)
            while not any(data in batch for _, batch in consumer.batches):
                await asyncio.sleep(0.01)
            assert consumer.handled_at(data) - sent < 0.7, data

        burst = [f"burst-{i}".encode() for i in range(10)]
        for data in burst:  # one every 50 ms: within the pause after `next`
            await js.publish(subject, data)
            await asyncio.sleep(0.05)
        while sum(len(batch) for _, batch in consumer.batches) < 12:
            await asyncio.sleep(0.01)
        assert [batch for _, batch in consumer.batches[2:]] == [burst]  # one batch, in order
        # ... no earlier than batch_wait_s after the fetch that brought `next` began (it began once
        # `alone` was handled; `next` itself may be handled any time after, on a loaded machine)
        assert consumer.batches[2][0] - consumer.batches[0][0] >= 1.5
    finally:
        await consumer.stop()


class Pausing(Timed):
    """Says when it pauses after a short batch (`batch_wait_s`)."""

    def __init__(self, stream: str, subject: str) -> None:
        super().__init__(stream, subject, batch_wait_s=60)
        self.pausing = asyncio.Event()

    async def _gather(self, pause_s: float) -> None:
        self.pausing.set()
        await super()._gather(pause_s)


async def test_a_cancel_as_stop_ends_the_pause_is_not_lost(scratch_stream: ScratchStream) -> None:
    """On Python 3.11 `asyncio.wait_for` swallowed a cancel that landed as its wait ended: a cancel
    of the consumer's task as `stop` ended its pause left the task running (here it then saw the
    stop and returned; the cancel was lost all the same)."""
    consumer = Pausing(scratch_stream.name, scratch_stream.subject)
    await consumer.start(scratch_stream.nc)
    try:
        await scratch_stream.js.publish(scratch_stream.subject, b"one")
        async with asyncio.timeout(10):
            await consumer.pausing.wait()
        for _ in range(5):  # into its wait
            await asyncio.sleep(0)
        task = consumer._task
        assert task is not None
        consumer._stopping.set()  # stop ends the pause ...
        task.cancel()  # ... as the task is cancelled
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, "the consumer ran on after it was cancelled"
        assert task.cancelled(), "the consumer's cancel was lost"
    finally:
        await consumer.stop()
