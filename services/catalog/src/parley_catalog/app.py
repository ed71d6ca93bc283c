"""HTTP app and bus wiring of the catalog service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from faststream.nats import NatsBroker
from parley_common.bus import make_broker
from parley_common.health import Check, Readiness
from parley_common.http import create_app
from parley_common.subjects import health_ping

from parley_catalog import db
from parley_catalog.settings import CatalogSettings, get_settings


def nats_check(broker: NatsBroker) -> Check:
    async def check() -> None:
        if not await broker.ping(timeout=0.5):
            raise ConnectionError("not connected to NATS")
        # A flush is a PING/PONG round trip: proves the server answers, not just that a socket is open.
        await broker.connection.flush(timeout=1)

    return check


def build_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    name = settings.service_name
    broker = make_broker(settings)
    engine = db.make_engine(settings.database_url, settings.db_pool_size)

    # Queue group: any one replica answering proves the service is reachable over the bus.
    @broker.subscriber(health_ping(name), queue=name)
    async def health() -> dict[str, Any]:
        return {"service": name, "ok": True}

    async def postgres_check() -> None:
        await db.ping(engine)

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))
    readiness.add("postgres", postgres_check)

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
