"""The gateway is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

from parley_devstack.testing import Infra, assert_ready_exactly_with
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import GatewaySettings


async def test_ready_exactly_when_nats_and_redis_answer(infra: Infra) -> None:
    await assert_ready_exactly_with(build_app, GatewaySettings, infra, "session_gateway", "redis")
