"""HTTP app and bus wiring of the catalog service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI

from parley_catalog import bus
from parley_catalog.agent_tests.router import router as agent_tests_router
from parley_catalog.agents.router import router as agents_router
from parley_catalog.chatty.router import router as chatty_router
from parley_catalog.context import CatalogContext
from parley_catalog.conversations.router import router as conversations_router
from parley_catalog.crypto import SecretBox
from parley_catalog.db import Database
from parley_catalog.octavus.router import router as octavus_router
from parley_catalog.settings import DEV_SECRET_KEY, CatalogSettings, get_settings
from parley_catalog.templates.router import router as templates_router
from parley_catalog.tools.router import router as tools_router
from parley_common.auth_client import AuthClient
from parley_common.authenticator import install_authenticator
from parley_common.kit.service import ServiceKit
from parley_common.netguard import guarded_client

log = structlog.get_logger(__name__)


def _webhook_client(settings: CatalogSettings) -> httpx.AsyncClient:
    # The address guard on every connection, unless the setting allows private destinations.
    return guarded_client(lambda: not settings.catalog_tools_allow_private)


def build_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database.from_settings(settings)
    kit = ServiceKit(settings, database=db)
    ctx = CatalogContext(
        settings=settings,
        db=db,
        broker=kit.broker,
        auth=AuthClient(
            kit.broker,
            cache_ttl_s=settings.catalog_auth_cache_ttl_s,
            timeout_s=settings.bus_request_timeout_s,
        ),
        box=SecretBox(settings.catalog_secret_key),
        http=_webhook_client(settings),
    )
    consumers = bus.subscribe(kit, ctx)  # every subscription of the catalog: see bus.py

    @kit.before_broker
    @asynccontextmanager
    async def webhook_client(_: FastAPI) -> AsyncIterator[None]:
        if settings.catalog_secret_key == DEV_SECRET_KEY and settings.environment != "development":
            log.warning("catalog.dev_secret_key", hint="set PARLEY_CATALOG_SECRET_KEY")
        if ctx.http.is_closed:  # a restarted lifespan (the previous one closed it)
            ctx.http = _webhook_client(settings)
        try:
            yield
        finally:
            await ctx.http.aclose()

    app = kit.build_app(
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
    )
    app.state.ctx = ctx
    install_authenticator(app, ctx.auth, cookie_name=settings.catalog_cookie_name)
    app.state.consumer = consumers.conversations
    app.state.test_results = consumers.test_results
    return app
