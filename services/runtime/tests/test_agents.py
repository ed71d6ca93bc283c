"""The runtime's agent cache: one resolve for concurrent sessions, dropped on agent events."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.bus import make_broker
from parley_common.catalog_contract import (
    AgentConfig,
    AgentEvent,
    AgentEventKind,
    AgentResolveReply,
    AgentResolveRequest,
    AgentSnapshot,
    AgentStatus,
)
from parley_common.errors import Codes, ParleyError, envelope
from parley_common.settings import CommonSettings
from parley_runtime.agents import AgentCache
from parley_runtime.bus import subscribe_agent_events

KNOWN = uuid.uuid4()


# `nats_url` (conftest.py): a server of this module's own, where no real catalog answers.
async def test_resolves_once_and_forgets_on_events(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    asked: list[str] = []
    version = 1

    async def resolve(msg: Msg) -> None:
        request = AgentResolveRequest.model_validate_json(msg.data)
        asked.append(request.agent_id)
        await asyncio.sleep(0.05)  # slow enough for concurrent sessions to overlap
        if request.agent_id != str(KNOWN):
            error = envelope(Codes.NOT_FOUND, params={"resource": "agent"})
            await msg.respond(AgentResolveReply(ok=False, error=error).model_dump_json().encode())
            return
        snapshot = AgentSnapshot(
            agent_id=KNOWN, version=version, status=AgentStatus.LIVE, config=AgentConfig(name="a")
        )
        await msg.respond(AgentResolveReply(ok=True, snapshot=snapshot).model_dump_json().encode())

    await nc.subscribe(subjects.CATALOG_AGENT_RESOLVE, cb=resolve)
    broker = make_broker(CommonSettings(nats_url=nats_url), name="agents-test")
    cache = AgentCache(broker, ttl_s=300, timeout_s=2)
    subscribe_agent_events(broker, cache.on_event)
    await broker.start()
    try:
        snapshots = await asyncio.gather(*(cache.get(str(KNOWN)) for _ in range(5)))
        assert asked == [str(KNOWN)] and {s.version for s in snapshots} == {1}
        await cache.get(str(KNOWN))
        assert len(asked) == 1

        version = 2
        event = AgentEvent(
            kind=AgentEventKind.UPDATED,
            agent_id=KNOWN,
            version=2,
            status=AgentStatus.LIVE,
            at=datetime.now(UTC),
        )
        await nc.publish(subjects.agent_event("updated"), event.model_dump_json().encode())
        deadline = time.monotonic() + 5
        while (await cache.get(str(KNOWN))).version != 2:
            assert time.monotonic() < deadline, "the cache kept the old version"
            await asyncio.sleep(0.02)

        with pytest.raises(ParleyError) as missing:
            await cache.get(str(uuid.uuid4()))
        assert missing.value.code is Codes.NOT_FOUND
    finally:
        await broker.stop()
        await nc.close()


async def test_an_expired_entry_is_resolved_again(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    asked: list[Any] = []

    async def resolve(msg: Msg) -> None:
        asked.append(msg.data)
        snapshot = AgentSnapshot(
            agent_id=KNOWN, version=1, status=AgentStatus.LIVE, config=AgentConfig(name="a")
        )
        await msg.respond(AgentResolveReply(ok=True, snapshot=snapshot).model_dump_json().encode())

    sub = await nc.subscribe(subjects.CATALOG_AGENT_RESOLVE, cb=resolve)
    broker = make_broker(CommonSettings(nats_url=nats_url), name="agents-ttl-test")
    cache = AgentCache(broker, ttl_s=0, timeout_s=2)
    await broker.start()
    try:
        await cache.get(str(KNOWN))
        await cache.get(str(KNOWN))
        assert len(asked) == 2
    finally:
        await sub.unsubscribe()
        await broker.stop()
        await nc.close()
