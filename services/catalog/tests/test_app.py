"""The catalog process is ready exactly when NATS and PostgreSQL answer, and answers its bus ping."""

from __future__ import annotations

from parley_catalog.app import build_app
from parley_catalog.settings import CatalogSettings
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra, health_ping, readiness


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(CatalogSettings(nats_url=infra.nats_url, database_url=infra.database_url))
    async with app.router.lifespan_context(app):
        assert await readiness(app) == (200, {"nats": "ok", "postgres": "ok"})
        assert await health_ping(infra.nats_url, "catalog") == {"service": "catalog", "ok": True}


async def test_not_ready_without_postgres(infra: Infra) -> None:
    database_url = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    app = build_app(CatalogSettings(nats_url=infra.nats_url, database_url=database_url))
    async with app.router.lifespan_context(app):
        status, checks = await readiness(app)
    assert (status, checks["nats"]) == (503, "ok")
    assert checks["postgres"] != "ok"
