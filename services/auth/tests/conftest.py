"""Auth tests run the real app in-process against real PostgreSQL, Redis and NATS (`infra`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from parley_auth.app import build_app
from parley_auth.context import AuthContext
from parley_auth.migrate import upgrade
from parley_auth.settings import AuthSettings
from parley_auth.testing import no_rate_limits
from parley_devstack.testing import app_context, started

from .support import Accounts, new_client


@pytest.fixture(scope="session")
async def auth_settings(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> AuthSettings:
    await asyncio.to_thread(upgrade, infra.database_url)
    settings: AuthSettings = infra.settings(
        AuthSettings,
        auth_token_secret="test-secret-" + uuid.uuid4().hex,
        auth_mail_dir=tmp_path_factory.mktemp("mail"),
        auth_outbox_poll_s=600,  # mail the tests wait for goes out because its commit woke the outbox
        **no_rate_limits(),
    )
    return settings


# Module scope: an auth app answers `auth.verify` in the `auth` queue group for as long as it
# lives, so it must not outlive this package's modules and answer other packages' requests
# (their apps have other token secrets).
@pytest.fixture(scope="module")
async def auth_app(auth_settings: AuthSettings) -> AsyncIterator[FastAPI]:
    async with started(build_app(auth_settings)) as app:
        yield app


@pytest.fixture
def ctx(auth_app: FastAPI) -> AuthContext:
    return app_context(auth_app, AuthContext)


@pytest.fixture(autouse=True)
async def _reset_rate_limits(auth_settings: AuthSettings) -> AsyncIterator[None]:
    yield
    redis = Redis.from_url(auth_settings.redis_url)
    keys = [k async for k in redis.scan_iter("parley:auth:rl*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
async def anon(auth_app: FastAPI) -> AsyncIterator[Any]:
    async with new_client(auth_app) as client:
        yield client


@pytest.fixture
async def accounts(auth_app: FastAPI) -> AsyncIterator[Accounts]:
    factory = Accounts(auth_app)
    yield factory
    await factory.close()
