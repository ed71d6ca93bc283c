"""The catalog process is ready exactly when NATS and PostgreSQL answer, and answers its bus ping."""

from __future__ import annotations

import json

import httpx
import nats

from parley_catalog.app import build_app
from parley_catalog.settings import CatalogSettings
from parley_common.subjects import health_ping
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra


def settings_for(infra: Infra, *, database_url: str | None = None) -> CatalogSettings:
    return CatalogSettings(
        nats_url=infra.nats_url,
        redis_url=infra.redis_url,
        database_url=database_url or infra.database_url,
    )


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(settings_for(infra))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://catalog") as client:
            response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"nats": "ok", "postgres": "ok"}

        nc = await nats.connect(infra.nats_url)
        try:
            reply = await nc.request(health_ping("catalog"), b"", timeout=5)
        finally:
            await nc.close()
        assert json.loads(reply.data) == {"service": "catalog", "ok": True}


async def test_not_ready_without_postgres(infra: Infra) -> None:
    app = build_app(settings_for(infra, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://catalog") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["nats"] == "ok"
    assert checks["postgres"] != "ok"
