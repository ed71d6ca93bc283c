"""The runtime process is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest

from parley_common.subjects import health_ping
from parley_devstack.servers import NatsServer, free_port
from parley_devstack.testing import Infra
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


def settings_for(infra: Infra, nats_url: str, *, redis_url: str | None = None) -> RuntimeSettings:
    return RuntimeSettings(
        nats_url=nats_url,
        redis_url=redis_url or infra.redis_url,
        database_url=infra.database_url,
    )


async def test_ready_and_answers_health_ping(infra: Infra, own_nats: str) -> None:
    app = build_app(settings_for(infra, own_nats))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"nats": "ok", "redis": "ok"}

        nc = await nats.connect(own_nats)
        try:
            reply = await nc.request(health_ping("runtime"), b"", timeout=5)
        finally:
            await nc.close()
        assert json.loads(reply.data) == {"service": "runtime", "ok": True}


async def test_not_ready_without_redis(infra: Infra, own_nats: str) -> None:
    app = build_app(settings_for(infra, own_nats, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["nats"] == "ok"
    assert checks["redis"] != "ok"
