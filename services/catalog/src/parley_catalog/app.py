"""HTTP app and bus wiring of the catalog service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check, sqlalchemy_check
from parley_common.http import create_app
from parley_common.subjects import health_ping

from parley_catalog import db
from parley_catalog.settings import CatalogSettings, get_settings


def build_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    name = settings.service_name
    broker = make_broker(settings)
    engine = db.make_engine(settings.database_url, settings.db_pool_size)

    # Queue group: any one replica answering proves the service is reachable over the bus.
    @broker.subscriber(health_ping(name), queue=name)
    async def health() -> dict[str, Any]:
        return {"service": name, "ok": True}

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))
    readiness.add("postgres", sqlalchemy_check(engine))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            await engine.dispose()

    app = create_app(
        settings,
        title="Parley catalog",
        description="Agents, templates, agent definitions, tools and conversation history.",
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.broker = broker
    app.state.engine = engine
    return app
