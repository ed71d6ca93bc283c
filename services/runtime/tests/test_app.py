"""The runtime process is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley_devstack.servers import NatsServer
from parley_devstack.testing import Infra, assert_not_ready_without, assert_serves, unreachable
from parley_runtime.app import build_app
from parley_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
async def own_nats(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A broker of this module's own: the shared one may hold session starts and agent-test jobs
    that other tests left behind, which a worker started here (one without Redis, even) would claim."""
    server = NatsServer(Path(tmp_path_factory.mktemp("runtime-app-nats")))
    server.start()
    try:
        await asyncio.to_thread(server.wait_ready, 30)
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


async def test_ready_and_answers_health_ping(infra: Infra, own_nats: str) -> None:
    app = build_app(RuntimeSettings(nats_url=own_nats, redis_url=infra.redis_url))
    await assert_serves(app, own_nats, "runtime", {"nats", "redis"})


async def test_not_ready_without_redis(own_nats: str) -> None:
    app = build_app(RuntimeSettings(nats_url=own_nats, redis_url=unreachable("redis")))
    await assert_not_ready_without(app, "redis")
