"""`jetstream.in_progress`: a worker's heartbeat for every message it holds, written at once,
against a real server: held messages stay with their holder past their ack wait, and come back to
the consumer once the heartbeats stop; what `publish` refuses, it refuses."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NotJSMessageError
from nats.js.api import AckPolicy, ConsumerConfig

from parley_common.jetstream import in_progress

from .conftest import ScratchStream

ACK_WAIT_S = 1.0


async def test_held_messages_stay_while_in_progress_and_come_back_when_it_stops(
    scratch_stream: ScratchStream,
) -> None:
    js, subject, nc = scratch_stream.js, scratch_stream.subject, scratch_stream.nc
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S)
    sub = await js.pull_subscribe(subject, durable="held", stream=scratch_stream.name, config=config)
    for i in range(3):
        await js.publish(subject, f"job-{i}".encode())
    held = await sub.fetch(3, timeout=5)
    assert [m.data for m in held] == [b"job-0", b"job-1", b"job-2"]
    sent = nc.stats["out_msgs"]
    for _ in range(8):  # 2.4 s, more than twice the ack wait
        assert await in_progress(held) == 3
        await asyncio.sleep(ACK_WAIT_S * 0.3)
    assert nc.stats["out_msgs"] == sent + 24
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)  # nothing redelivered: all three are still held
    again = await sub.fetch(3, timeout=ACK_WAIT_S * 5)  # the heartbeats stopped
    assert sorted(m.data for m in again) == [b"job-0", b"job-1", b"job-2"]
    assert all(m.metadata.num_delivered == 2 for m in again)
    assert await in_progress([]) == 0


async def test_it_refuses_what_publish_refuses(infra: Any) -> None:
    nc = await nats.connect(infra.nats_url)
    with pytest.raises(NotJSMessageError):  # not a JetStream message: nothing to keep in progress
        await in_progress([Msg(nc, subject="plain", reply="", data=b"")])
    held = Msg(nc, subject="x", reply="$JS.ACK.S.c.1.1.1.1700000000000000000.0", data=b"")
    await nc.close()
    with pytest.raises(ConnectionClosedError):
        await in_progress([held])
