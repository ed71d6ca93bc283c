"""The catalog process is ready exactly when NATS and PostgreSQL answer, and answers its bus ping."""

from __future__ import annotations

from parley_catalog.app import build_app
from parley_catalog.settings import CatalogSettings
from parley_devstack.testing import Infra, assert_not_ready_without, assert_serves, unreachable


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(CatalogSettings(nats_url=infra.nats_url, database_url=infra.database_url))
    await assert_serves(app, infra.nats_url, "catalog", {"nats", "postgres"})


async def test_not_ready_without_postgres(infra: Infra) -> None:
    app = build_app(CatalogSettings(nats_url=infra.nats_url, database_url=unreachable("postgresql")))
    await assert_not_ready_without(app, "postgres")
