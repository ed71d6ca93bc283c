"""The catalog process is ready exactly when NATS and PostgreSQL answer, and answers its bus ping."""

from __future__ import annotations

from parley_catalog.app import build_app
from parley_catalog.settings import CatalogSettings
from parley_devstack.testing import Infra, assert_ready_exactly_with


async def test_ready_exactly_when_nats_and_postgres_answer(infra: Infra) -> None:
    await assert_ready_exactly_with(build_app, CatalogSettings, infra, "catalog", "postgres")
