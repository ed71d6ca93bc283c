"""The runtime process is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

from parley_devstack.servers import free_port
from parley_devstack.testing import Infra, health_ping, readiness
from parley_runtime.app import build_app
from parley_runtime.settings import RuntimeSettings


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(RuntimeSettings(nats_url=infra.nats_url, redis_url=infra.redis_url))
    async with app.router.lifespan_context(app):
        assert await readiness(app) == (200, {"nats": "ok", "redis": "ok"})
        assert await health_ping(infra.nats_url, "runtime") == {"service": "runtime", "ok": True}


async def test_not_ready_without_redis(infra: Infra) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    app = build_app(RuntimeSettings(nats_url=infra.nats_url, redis_url=redis_url))
    async with app.router.lifespan_context(app):
        status, checks = await readiness(app)
    assert (status, checks["nats"]) == (503, "ok")
    assert checks["redis"] != "ok"
