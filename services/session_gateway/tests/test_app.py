"""The gateway is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

from parley_devstack.testing import Infra, assert_not_ready_without, assert_serves, unreachable
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import GatewaySettings


async def test_ready_and_answers_health_ping(infra: Infra) -> None:
    app = build_app(GatewaySettings(nats_url=infra.nats_url, redis_url=infra.redis_url))
    await assert_serves(app, infra.nats_url, "session_gateway", {"nats", "redis"})


async def test_not_ready_without_redis(infra: Infra) -> None:
    app = build_app(GatewaySettings(nats_url=infra.nats_url, redis_url=unreachable("redis")))
    await assert_not_ready_without(app, "redis")
