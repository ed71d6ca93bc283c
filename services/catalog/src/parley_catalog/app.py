"""HTTP app and bus wiring of the catalog service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import FastAPI

from parley_catalog import handlers
from parley_catalog.agent_tests.consumer import ResultConsumer
from parley_catalog.agent_tests.router import router as agent_tests_router
from parley_catalog.agents.router import router as agents_router
from parley_catalog.chatty.router import router as chatty_router
from parley_catalog.context import CatalogContext
from parley_catalog.conversations.consumer import ConversationConsumer
from parley_catalog.conversations.router import router as conversations_router
from parley_catalog.crypto import SecretBox
from parley_catalog.db import Database
from parley_catalog.octavus.router import router as octavus_router
from parley_catalog.settings import DEV_SECRET_KEY, CatalogSettings, get_settings
from parley_catalog.templates.router import router as templates_router
from parley_catalog.tools.router import router as tools_router
from parley_common.auth_client import AuthClient
from parley_common.authenticator import install_authenticator
from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check, sqlalchemy_check
from parley_common.http import create_app
from parley_common.netguard import guarded_client
from parley_common.subjects import health_ping

log = structlog.get_logger(__name__)


def _webhook_client(settings: CatalogSettings) -> httpx.AsyncClient:
    # The address guard on every connection, unless the setting allows private destinations.
    return guarded_client(lambda: not settings.catalog_tools_allow_private)


def build_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    name = settings.service_name
    broker = make_broker(settings)
    db = Database(settings.database_url, settings.db_pool_size)
    ctx = CatalogContext(
        settings=settings,
        db=db,
        broker=broker,
        auth=AuthClient(
            broker, cache_ttl_s=settings.catalog_auth_cache_ttl_s, timeout_s=settings.bus_request_timeout_s
        ),
        box=SecretBox(settings.catalog_secret_key),
        http=_webhook_client(settings),
    )
    handlers.register(broker, ctx)
    consumer = ConversationConsumer(settings, db)
    test_results = ResultConsumer(settings, db)

    # Queue group: any one replica answering proves the service is reachable over the bus.
    @broker.subscriber(health_ping(name), queue=name)
    async def health() -> dict[str, Any]:
        return {"service": name, "ok": True}

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))
    readiness.add("postgres", sqlalchemy_check(db.engine))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.catalog_secret_key == DEV_SECRET_KEY and settings.environment != "development":
            log.warning("catalog.dev_secret_key", hint="set PARLEY_CATALOG_SECRET_KEY")
        if ctx.http.is_closed:  # a restarted lifespan (the previous one closed it)
            ctx.http = _webhook_client(settings)
        await broker.start()
        try:
            await consumer.start(broker.connection)
            await test_results.start(broker.connection)
            yield
        finally:
            await test_results.stop()
            await consumer.stop()
            await broker.stop()
            await ctx.http.aclose()
            await db.dispose()

    app = create_app(
        settings,
        title="Parley catalog",
        description="Agents, templates, definitions, lint, tools, conversation history and agent tests.",
        routers=[
            agents_router,
            agent_tests_router,
            templates_router,
            tools_router,
            conversations_router,
            octavus_router,
            chatty_router,
        ],
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.ctx = ctx
    install_authenticator(app, ctx.auth, cookie_name=settings.catalog_cookie_name)
    app.state.consumer = consumer
    app.state.test_results = test_results
    # Kept for callers of the skeleton's attributes.
    app.state.broker = broker
    app.state.engine = db.engine
    return app
