"""`NumberedReader` against a real nats-server: core NATS for the flow, the stream for the gaps.

Each number is handed on once and in order whatever core delivers (out of order, twice, with a
gap), what the subscriber missed is read from the stream (at open for a resume, after a reconnect,
at a gap), a gap the stream does not fill does not stall the reader, and a reader that needs no
catch-up creates no JetStream consumer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from parley_common import numbered
from parley_common.bus import BusEvents
from parley_common.jetstream import publish_durably
from parley_common.numbered import NumberedReader
from parley_common.ordered_reader import OnMsg, OrderedReader
from parley_devstack.servers import NatsServer
from parley_devstack.testing import subscribed

STREAM = "NUMBERED"


def _decode(data: bytes) -> dict[str, int] | None:
    body = json.loads(data)
    return body if isinstance(body, dict) and "index" in body else None


def _body(index: int) -> bytes:
    return json.dumps({"index": index}).encode()


class Harness:
    def __init__(self, server: NatsServer, nc: Client, events: BusEvents, subject: str) -> None:
        self.server, self.nc, self.events, self.subject = server, nc, events, subject
        self.got: list[int] = []
        self.readers: list[NumberedReader[dict[str, int]]] = []

    async def reader(self, *, after: int = 0, catch_up: bool = False) -> NumberedReader[dict[str, int]]:
        async def deliver(item: dict[str, int]) -> None:
            self.got.append(item["index"])

        reader = NumberedReader(
            self.nc,
            self.events,
            stream=STREAM,
            subject=self.subject,
            decode=_decode,
            index_of=lambda item: item["index"],
            deliver=deliver,
            after=after,
            settle_s=0.1,
        )
        await reader.open(catch_up=catch_up)
        self.readers.append(reader)
        return reader

    async def store(self, index: int, nc: Client | None = None) -> None:
        """Published as the runtime's acked events are: stored, and delivered over core."""
        await publish_durably(nc or self.nc, self.subject, _body(index), msg_id=f"m{index}", timeout_s=10)

    def describe(self) -> str:
        readers = [
            f"last={r.last_index} held={sorted(r._held)} rounds={r.catch_ups} subscribed={r._sub is not None}"
            for r in self.readers
        ]
        return f"got={self.got} readers={readers} connected={self.nc.is_connected}"

    async def consumers(self) -> int:
        return int((await self.nc.jetstream().stream_info(STREAM)).state.consumer_count)


async def _until(probe: Callable[[], bool], timeout: float = 5, harness: Harness | None = None) -> None:
    async def wait() -> None:
        while not probe():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        if harness is None:
            raise
        # What the readers were at, so that a rare failure explains itself in a CI log.
        raise AssertionError(f"not within {timeout} s: {harness.describe()}") from None


async def _until_no_consumer(harness: Harness) -> None:
    """The server reaps an ordered consumer a few seconds after its subscriber left."""
    for _ in range(150):
        if await harness.consumers() == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the catch-up's consumer is still there")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    server = NatsServer(tmp_path / "nats", log_path=tmp_path / "nats.log")
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    events = BusEvents()
    nc = await nats.connect(
        server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, reconnected_cb=events.reconnected
    )
    subject = f"numbered.{uuid.uuid4().hex[:8]}.out"
    stream = StreamConfig(name=STREAM, subjects=["numbered.*.out"], duplicate_window=60)
    await nc.jetstream().add_stream(stream)
    h = Harness(server, nc, events, subject)
    try:
        yield h
    finally:
        for reader in h.readers:
            await reader.close()
        await nc.close()
        server.stop()


async def test_a_new_reader_needs_no_consumer_and_drops_duplicates_and_reorders(harness: Harness) -> None:
    reader = await harness.reader()
    for index in (2, 1, 2, 3, 1):  # core delivery out of order and twice
        await harness.nc.publish(harness.subject, _body(index))
    await _until(lambda: harness.got == [1, 2, 3])
    await harness.store(4)
    await _until(lambda: harness.got == [1, 2, 3, 4], harness=harness)
    assert await harness.consumers() == 0
    await asyncio.sleep(0.5)  # any catch-up the reordering asked for is over, and added nothing
    assert harness.got == [1, 2, 3, 4]
    assert reader.last_index == 4


async def test_a_gap_is_filled_from_the_stream(harness: Harness) -> None:
    for index in (1, 2, 3):
        await harness.store(index)
    reader = await harness.reader(after=1)  # as if core had lost 2 and 3
    assert harness.got == []
    await harness.store(4)  # beyond the next expected (2): a gap
    await _until(lambda: harness.got == [2, 3, 4])
    assert reader.catch_ups >= 1
    await _until(lambda: reader._task is not None and reader._task.done())
    await _until_no_consumer(harness)  # the catch-up's consumer was dropped


async def test_a_resumed_reader_catches_up_at_open(harness: Harness) -> None:
    for index in (1, 2, 3):
        await harness.store(index)
    await harness.reader(after=1, catch_up=True)
    await _until(lambda: harness.got == [2, 3])
    await harness.store(4)
    await _until(lambda: harness.got == [2, 3, 4])


async def test_a_gap_the_stream_does_not_fill_does_not_stall(harness: Harness) -> None:
    reader = await harness.reader()
    await harness.store(1)
    # Delivered over core, but the stream drops it (its id is a duplicate of 1's): 2 never was.
    await harness.nc.publish(harness.subject, _body(3), headers={"Nats-Msg-Id": "m1"})
    await _until(lambda: harness.got == [1, 3], timeout=3)
    await harness.store(4)
    await _until(lambda: harness.got == [1, 3, 4])
    assert reader.catch_ups >= 1


async def test_what_was_published_while_away_comes_after_a_reconnect(
    harness: Harness, tmp_path: Path
) -> None:
    server = harness.server
    # The reader's connection comes back slowly; the publisher's at once.
    await harness.nc.close()
    harness.nc = await nats.connect(
        server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1.5,
        reconnected_cb=harness.events.reconnected,
    )
    publisher = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        await harness.reader()
        await subscribed(harness.nc)  # before another connection publishes
        await harness.store(1, publisher)
        await _until(lambda: harness.got == [1], harness=harness)
        server.signal(signal.SIGKILL)
        assert server.proc is not None
        server.proc.wait(10)
        server.close_log()
        restarted = NatsServer(
            tmp_path / "nats", port=server.port, http_port=server.http_port, log_path=tmp_path / "n2.log"
        )
        restarted.start()
        harness.server = restarted
        await asyncio.to_thread(restarted.wait_ready, 30)
        await harness.store(2, publisher)
        await harness.store(3, publisher)
        # Nothing more is published: 2 and 3 come from the stream once the reader is back.
        await _until(lambda: harness.got == [1, 2, 3], timeout=15, harness=harness)
        assert harness.events.reconnects == 1
        await harness.store(4, publisher)
        await _until(lambda: harness.got == [1, 2, 3, 4], harness=harness)
    finally:
        await publisher.close()


async def test_a_close_as_the_stream_delivers_still_stops_the_catch_up(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close` cancels the catch-up. On Python 3.11 `asyncio.wait_for` swallowed a cancel that
    landed as the stream's message was queued for it: the catch-up read on, closed or not."""
    await harness.store(1)
    reading = asyncio.Event()
    later: list[asyncio.Task[None]] = []

    class Delayed(OrderedReader):
        """The real reader, its first message handed over once the catch-up waits for it, and the
        catch-up cancelled in the same step."""

        def __init__(self, *args: Any, on_msg: OnMsg, **kwargs: Any) -> None:
            async def hand_over(msg: Msg) -> None:
                await reading.wait()
                await on_msg(msg)  # queued for the catch-up ...
                task = harness.readers[0]._task
                assert task is not None
                task.cancel()  # ... as the reader is closed

            async def delayed(msg: Msg) -> None:
                if not later:
                    later.append(asyncio.create_task(hand_over(msg)))

            super().__init__(*args, on_msg=delayed, **kwargs)

        async def open(self) -> None:
            await super().open()
            reading.set()  # the catch-up goes on to wait for the message without a pause

    monkeypatch.setattr(numbered, "OrderedReader", Delayed)
    reader = await harness.reader(catch_up=True)
    catch_up = reader._task
    assert catch_up is not None
    done, _ = await asyncio.wait({catch_up}, timeout=2)
    assert done, "the catch-up ran on after it was cancelled"
    assert catch_up.cancelled(), f"the catch-up ran on after it was cancelled: {harness.describe()}"
    assert later and later[0].done()
