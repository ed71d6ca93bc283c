"""The session_gateway process is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

import json

import httpx
import nats

from parley_common.subjects import health_ping
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import GatewaySettings


def settings_for(infra: Infra, *, redis_url: str | None = None) -> GatewaySettings:
    return GatewaySettings(
        nats_url=infra.nats_url,
        redis_url=redis_url or infra.redis_url,
        database_url=infra.database_url,
    )


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(settings_for(infra))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://session_gateway") as client:
            response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"nats": "ok", "redis": "ok"}

        nc = await nats.connect(infra.nats_url)
        try:
            reply = await nc.request(health_ping("session_gateway"), b"", timeout=5)
        finally:
            await nc.close()
        assert json.loads(reply.data) == {"service": "session_gateway", "ok": True}


async def test_not_ready_without_redis(infra: Infra) -> None:
    app = build_app(settings_for(infra, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://session_gateway") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["nats"] == "ok"
    assert checks["redis"] != "ok"
