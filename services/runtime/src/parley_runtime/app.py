"""Bus wiring of a runtime worker, plus the small HTTP app that exposes its health.

The worker's real work arrives over NATS; HTTP is only there so orchestrators (and the devstack
edge) can probe `/healthz` and `/readyz` the same way as for every other service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check, redis_check
from parley_common.http import create_app
from parley_common.subjects import health_ping
from redis.asyncio import Redis

from parley_runtime.settings import RuntimeSettings, get_settings


def build_app(settings: RuntimeSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    name = settings.service_name
    broker = make_broker(settings)
    # Short connect timeout: a readiness probe must fail fast, not hang on a dead Redis.
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=1, health_check_interval=30)

    # Queue group: any one worker answering proves the pool is reachable over the bus.
    @broker.subscriber(health_ping(name), queue=name)
    async def health() -> dict[str, Any]:
        return {"service": name, "ok": True}

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))
    readiness.add("redis", redis_check(redis))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            await redis.aclose()

    app = create_app(
        settings,
        title="Parley runtime worker",
        description="Health of a runtime worker; sessions are executed from the bus.",
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.broker = broker
    app.state.redis = redis
    return app
