"""The auth service application: HTTP API, bus subscriptions (bus.py), outbox worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_auth import bus
from parley_auth.accounts.router import router as accounts_router
from parley_auth.apikeys.router import router as apikeys_router
from parley_auth.context import AuthContext
from parley_auth.db import Database
from parley_auth.deps import LocalVerifier
from parley_auth.mail.outbox import WAKE, run_outbox
from parley_auth.orgs.router import router as orgs_router
from parley_auth.security.turnstile import TurnstileVerifier, make_verifier
from parley_auth.settings import AuthSettings, get_settings
from parley_auth.tokens.router import router as tokens_router
from parley_common.authenticator import install_authenticator
from parley_common.kit.service import ServiceKit
from parley_common.ratelimit import RateLimiter
from parley_common.tasks import cancel_and_wait


def build_app(settings: AuthSettings | None = None, *, turnstile: TurnstileVerifier | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database.from_settings(settings)
    kit = ServiceKit(settings, redis=True, database=db)
    ctx = AuthContext(
        settings=settings,
        db=db,
        limiter=RateLimiter(settings.redis_url, kit.redis.connection_pool, key_prefix="parley:auth:rl"),
        turnstile=turnstile
        or make_verifier(settings.auth_turnstile_secret, settings.auth_turnstile_verify_url),
        broker=kit.broker,
    )
    bus.register(kit, ctx)  # every subscription: bus.py

    outbox_wake = asyncio.Event()  # set when a transaction that queued mail commits (mail/outbox.py)
    db.sessions.configure(info={WAKE: outbox_wake})

    def start_outbox() -> asyncio.Task[None]:
        return asyncio.create_task(run_outbox(settings, db.sessions, outbox_wake), name="mail-outbox")

    @kit.part
    @asynccontextmanager
    async def outbox(app: FastAPI) -> AsyncIterator[None]:
        app.state.outbox = start_outbox()
        try:
            yield
        finally:
            await cancel_and_wait(app.state.outbox)

    app = kit.build_app(
        title="Parley auth",
        description="Accounts, sessions, API keys, organizations and scoped client tokens.",
        routers=[accounts_router, apikeys_router, orgs_router, tokens_router],
    )
    app.state.ctx = ctx
    install_authenticator(app, LocalVerifier(ctx), cookie_name=settings.auth_cookie_name)
    app.state.start_outbox = start_outbox  # tests pause and restart the worker
    return app
