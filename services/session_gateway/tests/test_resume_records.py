"""The resume records on a real Redis (the test session's): written over the gateway's own
connection (`RedisLine`), not through the pool, and found again by the resume checks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from parley_common.redis_client import RedisLine, make_redis
from parley_common.settings import CommonSettings
from parley_session_gateway.access import Admission, Refused
from parley_session_gateway.resume import check_resume, find_chat, remember, remember_chat

from .session_fakes import AGENT, principal


@pytest.fixture
async def redis(infra: Any) -> AsyncIterator[Redis]:
    client = make_redis(CommonSettings(redis_url=infra.redis_url))
    yield client
    await client.aclose()


def _pooled(redis: Redis) -> int:
    pool = redis.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_a_session_is_remembered_over_the_line_and_resumed_by_its_owner(redis: Redis) -> None:
    line = RedisLine(redis.connection_pool)
    owner, conversation_id = principal(), uuid.uuid4()
    try:
        await remember(line, conversation_id, Admission(principal=owner, agent_id=AGENT), 77)
        assert _pooled(redis) == 0  # nothing went through the pool
        assert await check_resume(redis, str(conversation_id), Admission(principal=owner, agent_id=AGENT))
        assert 0 < await redis.ttl(f"parley:gw:session:{conversation_id}") <= 77
        stranger = Admission(principal=principal(user_id=uuid.uuid4()), agent_id=AGENT)
        with pytest.raises(Refused):
            await check_resume(redis, str(conversation_id), stranger)
    finally:
        await line.aclose()


async def test_a_chat_session_is_remembered_over_the_line(redis: Redis) -> None:
    line = RedisLine(redis.connection_pool)
    token, conversation_id = principal(agent_id=AGENT), uuid.uuid4()
    started = datetime.now(UTC)
    try:
        await remember_chat(line, conversation_id, token, AGENT, started, 60)
        assert _pooled(redis) == 0
        record = await find_chat(redis, str(conversation_id), token)
        assert (record.conversation_id, record.started_at) == (conversation_id, started)
    finally:
        await line.aclose()
