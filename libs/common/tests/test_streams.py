"""Stream creation honours the replica setting (a clustered NATS needs 3 copies)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import APIError

from parley_common.session_contract import STREAMS, ensure_streams
from parley_common.subjects import SESSION_IN_STREAM, SESSION_OUT_STREAM


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
    updates: list[StreamConfig] = []
    real_update = js.update_stream

    async def counting(config: StreamConfig, **kwargs: Any) -> Any:
        updates.append(config)
        return await real_update(config, **kwargs)

    monkeypatch.setattr(js, "update_stream", counting)
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
    """Every open session holds an ordered consumer of `SESSION_IN`; nats-server 2.15 caps a stream
    without a limit of its own at 1,000 consumers, which capped a deployment at 1,000 sessions."""
    for stream in (SESSION_IN_STREAM, SESSION_OUT_STREAM):
        name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
        config = dataclasses.replace(STREAMS[stream], name=name, subjects=[f"test.{name}.*"])
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
