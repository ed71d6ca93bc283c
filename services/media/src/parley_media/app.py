"""A media worker process: the bus handler, its calls, and the small HTTP app for health.

Offers arrive over NATS (bus.py); HTTP is only there so orchestrators and the devstack edge
probe `/healthz` and `/readyz` the same way as for every other service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_common.kit.service import ServiceKit
from parley_media import bus
from parley_media.service import MediaService
from parley_media.settings import MediaSettings, get_settings


def build_app(settings: MediaSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    kit = ServiceKit(settings)
    service = MediaService(settings)
    bus.register(kit.broker, service)
    kit.health_info = lambda: {"worker_id": service.worker_id, "calls": len(service.calls)}

    @kit.part
    @asynccontextmanager
    async def calls(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.stop()

    app = kit.build_app(
        title="Parley media worker",
        description="Health of a WebRTC media worker; offers are answered over the bus.",
    )
    app.state.broker = kit.broker
    app.state.service = service
    return app
