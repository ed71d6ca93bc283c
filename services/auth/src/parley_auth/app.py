"""The auth service application: HTTP API, bus handlers, outbox worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from parley_auth import handlers
from parley_auth.accounts.router import router as accounts_router
from parley_auth.apikeys.router import router as apikeys_router
from parley_auth.context import AuthContext
from parley_auth.db import Database
from parley_auth.deps import LocalVerifier
from parley_auth.mail.inbox import MailInbox
from parley_auth.mail.outbox import run_outbox
from parley_auth.orgs.router import router as orgs_router
from parley_auth.security.turnstile import TurnstileVerifier, make_verifier
from parley_auth.settings import AuthSettings, get_settings
from parley_auth.tokens.router import router as tokens_router
from parley_common.authenticator import install_authenticator
from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check, sqlalchemy_check
from parley_common.http import create_app
from parley_common.ratelimit import RateLimiter
from parley_common.redis_client import make_pool


def build_app(settings: AuthSettings | None = None, *, turnstile: TurnstileVerifier | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database(settings.database_url)
    broker = make_broker(settings)
    ctx = AuthContext(
        settings=settings,
        db=db,
        limiter=RateLimiter(settings.redis_url, make_pool(settings), key_prefix="parley:auth:rl"),
        turnstile=turnstile
        or make_verifier(settings.auth_turnstile_secret, settings.auth_turnstile_verify_url),
        broker=broker,
    )
    handlers.register(broker, ctx)

    readiness = Readiness()

    readiness.add("postgres", sqlalchemy_check(db.engine))
    readiness.add("redis", ctx.limiter.check_ready)
    readiness.add("nats", nats_check(broker))

    inbox = MailInbox(db.sessions)  # mail requested by other services (`mail.send`)

    def start_outbox() -> asyncio.Task[None]:
        return asyncio.create_task(run_outbox(settings, db.sessions), name="mail-outbox")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        await inbox.start(broker.connection)
        app.state.outbox = start_outbox()
        try:
            yield
        finally:
            await inbox.stop()
            app.state.outbox.cancel()
            with suppress(asyncio.CancelledError):
                await app.state.outbox
            await broker.stop()
            await db.dispose()

    app = create_app(
        settings,
        title="Parley auth",
        description="Accounts, sessions, API keys, organizations and scoped client tokens.",
        routers=[accounts_router, apikeys_router, orgs_router, tokens_router],
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.ctx = ctx
    install_authenticator(app, LocalVerifier(ctx), cookie_name=settings.auth_cookie_name)
    app.state.start_outbox = start_outbox  # tests pause and restart the worker
    return app
