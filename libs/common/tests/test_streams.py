"""Stream creation honours the replica setting (a clustered NATS needs 3 copies)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import APIError

from parley_common.session_contract import STREAMS, ensure_streams
from parley_common.subjects import SESSION_IN_STREAM, SESSION_OUT_STREAM, session_in, session_in_stored


def count_updates(js: JetStreamContext, monkeypatch: pytest.MonkeyPatch) -> list[StreamConfig]:
    """The stream updates `js` makes from now on."""
    updates: list[StreamConfig] = []
    real_update = js.update_stream

    async def counting(config: StreamConfig, **kwargs: Any) -> Any:
        updates.append(config)
        return await real_update(config, **kwargs)

    monkeypatch.setattr(js, "update_stream", counting)
    return updates


async def test_replicas_reach_the_server(infra: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setitem(STREAMS, name, StreamConfig(name=name, subjects=[f"test.{name}"]))
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    try:
        # A single server cannot keep 3 copies: the setting must reach it and be refused...
        with pytest.raises(APIError):
            await ensure_streams(js, [name], replicas=3)
        # ...while the default (PARLEY_JETSTREAM_REPLICAS=1) is what a single server takes.
        await ensure_streams(js, [name])
        assert (await js.stream_info(name)).config.num_replicas == 1
    finally:
        await js.delete_stream(name)
        await nc.close()


async def test_a_stream_is_updated_only_when_its_configuration_changed(
    infra: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process starting runs this: an unchanged stream costs no update (on a cluster, a
    round of consensus per stream and process)."""
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setitem(STREAMS, name, StreamConfig(name=name, subjects=[f"test.{name}"], max_age=60.0))
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    updates = count_updates(js, monkeypatch)
    try:
        await ensure_streams(js, [name])
        await ensure_streams(js, [name])
        assert updates == []
        monkeypatch.setitem(STREAMS, name, StreamConfig(name=name, subjects=[f"test.{name}"], max_age=120.0))
        await ensure_streams(js, [name])
        assert len(updates) == 1 and (await js.stream_info(name)).config.max_age == 120.0
    finally:
        await js.delete_stream(name)
        await nc.close()


async def test_the_session_streams_take_a_consumer_per_session_beyond_a_thousand(
    infra: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open session held an ordered consumer of `SESSION_IN` (before change 76), and a resume
    holds one of `SESSION_OUT`; nats-server 2.15 caps a stream without a limit of its own at 1,000
    consumers, which capped a deployment at 1,000 sessions."""
    for stream in (SESSION_IN_STREAM, SESSION_OUT_STREAM):
        name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
        config = dataclasses.replace(STREAMS[stream], name=name, subjects=[f"test.{name}.*"], republish=None)
        monkeypatch.setitem(STREAMS, name, config)
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        try:
            await ensure_streams(js, [name])
            ephemeral = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
            for _ in range(1_001):
                await js.add_consumer(name, ephemeral)
            assert (await js.stream_info(name)).state.consumer_count == 1_001
        finally:
            await js.delete_stream(name)
            await nc.close()


async def test_the_input_stream_republishes_each_input_with_its_sequences(
    infra: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a session's reader trusts (runtime sessions/inputs.py): each input stored, on
    `session_in_stored`, with its stream sequence and the one before it on the same subject, and a
    duplicate (the same `Nats-Msg-Id`) not at all. The stream is not updated at every start."""
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    try:
        await ensure_streams(js, [SESSION_IN_STREAM])
        updates = count_updates(js, monkeypatch)
        await ensure_streams(js, [SESSION_IN_STREAM])
        assert updates == []
        ours, other = str(uuid.uuid4()), str(uuid.uuid4())
        heard: list[tuple[str, str, bytes]] = []

        async def on(msg: Msg) -> None:
            headers = msg.headers or {}
            heard.append((headers["Nats-Sequence"], headers["Nats-Last-Sequence"], msg.data))

        await nc.subscribe(session_in_stored(ours), cb=on)
        await nc.flush()
        acks = [
            await js.publish(session_in(ours), b"one", headers={"Nats-Msg-Id": f"{ours}:1"}),
            await js.publish(session_in(other), b"elsewhere"),
            await js.publish(session_in(ours), b"two"),
            await js.publish(session_in(ours), b"one", headers={"Nats-Msg-Id": f"{ours}:1"}),
        ]
        assert acks[3].duplicate
        for _ in range(100):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert heard == [(str(acks[0].seq), "0", b"one"), (str(acks[2].seq), str(acks[0].seq), b"two")]
    finally:
        await nc.close()
