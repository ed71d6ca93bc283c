"""A media worker process: the bus handler, its calls, and the small HTTP app for health.

Offers arrive over NATS (handlers.py); HTTP is only there so orchestrators and the devstack edge
probe `/healthz` and `/readyz` the same way as for every other service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check
from parley_common.http import create_app
from parley_media import handlers
from parley_media.service import MediaService
from parley_media.settings import MediaSettings, get_settings


def build_app(settings: MediaSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    broker = make_broker(settings)
    service = MediaService(settings)
    handlers.register(broker, service, settings.service_name)

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await service.stop()
            await broker.stop()

    app = create_app(
        settings,
        title="Parley media worker",
        description="Health of a WebRTC media worker; offers are answered over the bus.",
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.broker = broker
    app.state.service = service
    return app
