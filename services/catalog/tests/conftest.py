"""Catalog tests run the real catalog app and a real auth app in-process on real PostgreSQL,
Redis and NATS (`infra`); the catalog verifies every credential with auth over the bus.

Both apps are module-scoped: every module gets its own pair, stopped at its end, so at most one
app of each kind listens in the `auth`/`catalog` queue groups at a time (the schemathesis module
runs its own pair on another event loop). They share one token secret and one secret key anyway,
so a request answered by any of them is answered right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js import JetStreamContext

from parley_auth.app import build_app as build_auth_app
from parley_auth.migrate import upgrade as upgrade_auth
from parley_auth.settings import AuthSettings
from parley_auth.testing import no_rate_limits
from parley_catalog.app import build_app
from parley_catalog.context import CatalogContext
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_catalog.settings import CatalogSettings
from parley_devstack.testing import Infra, app_context, started

from .fake_webhook import FakeWebhook, running
from .support import User, World

AUTH_SECRET = "catalog-tests-auth-secret-0123456789abcdef"
SECRET_KEY = "catalog-tests-secret-key-0123456789abcdef"


def auth_settings_for(infra: Infra, mail_dir: Path) -> AuthSettings:
    return infra.settings(
        AuthSettings, auth_token_secret=AUTH_SECRET, auth_mail_dir=mail_dir, **no_rate_limits()
    )


def catalog_settings_for(infra: Infra, **overrides: Any) -> CatalogSettings:
    fast_retries = {"catalog_conversations_retry_delay_s": 0.2, "catalog_tools_retry_backoff_s": 0.01}
    return infra.settings(CatalogSettings, catalog_secret_key=SECRET_KEY, **{**fast_retries, **overrides})


@pytest.fixture(scope="session")
async def migrated(infra: Infra) -> Infra:
    await asyncio.to_thread(upgrade_auth, infra.database_url)
    await asyncio.to_thread(upgrade_catalog, infra.database_url)
    return infra


@pytest.fixture(scope="module")
async def auth_app(migrated: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    async with started(build_auth_app(auth_settings_for(migrated, tmp_path_factory.mktemp("mail")))) as app:
        yield app


@pytest.fixture(scope="module")
async def catalog_app(migrated: Infra, auth_app: FastAPI) -> AsyncIterator[FastAPI]:
    async with started(build_app(catalog_settings_for(migrated))) as app:
        yield app


@pytest.fixture
def ctx(catalog_app: FastAPI) -> CatalogContext:
    return app_context(catalog_app, CatalogContext)


@pytest.fixture
async def world(auth_app: FastAPI, catalog_app: FastAPI) -> AsyncIterator[World]:
    made = World(auth_app, catalog_app)
    yield made
    await made.close()


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeWebhook]:
    """A local webhook server (tests/fake_webhook.py) for the tool tests."""
    async with running() as server:
        yield server


@pytest.fixture
def allow_private(ctx: CatalogContext) -> Iterator[None]:
    """The operator allowance the local fake server needs (it listens on loopback)."""
    ctx.settings.catalog_tools_allow_private = True
    yield
    ctx.settings.catalog_tools_allow_private = False


# The people, agent and bus connection of the conversation tests.
@pytest.fixture
async def alice(world: World) -> User:
    return await world.user()


@pytest.fixture
async def agent(alice: User) -> dict[str, Any]:
    return await alice.create_agent()


@pytest.fixture
async def js(ctx: CatalogContext) -> AsyncIterator[JetStreamContext]:
    nc: Client = await nats.connect(ctx.settings.nats_url)
    yield nc.jetstream()
    await nc.close()
