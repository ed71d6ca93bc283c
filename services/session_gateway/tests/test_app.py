"""The gateway is ready exactly when NATS and Redis answer, and answers its bus ping; its socket
routes' dependencies run in the event loop."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.routing import APIWebSocketRoute

from parley_devstack.testing import Infra, assert_ready_exactly_with
from parley_session_gateway.app import build_app
from parley_session_gateway.chat.router import router as chat_router
from parley_session_gateway.realtime.router import router as realtime_router
from parley_session_gateway.settings import GatewaySettings


async def test_ready_exactly_when_nats_and_redis_answer(infra: Infra) -> None:
    await assert_ready_exactly_with(build_app, GatewaySettings, infra, "session_gateway", "redis")


def test_the_socket_routes_dependencies_are_coroutines() -> None:
    """FastAPI runs a dependency that is a plain function in its thread pool: a round trip to a
    worker thread for each one, for every socket opened."""
    routes = [*realtime_router.routes, *chat_router.routes]
    sockets = [r for r in routes if isinstance(r, APIWebSocketRoute)]
    assert {r.path for r in sockets} >= {"/realtime", "/chat/ws"}

    def calls(dependant: Any) -> list[Any]:
        return [c for d in dependant.dependencies for c in (d.call, *calls(d))]

    for route in sockets:
        found = calls(route.dependant)
        assert found and all(inspect.iscoroutinefunction(c) for c in found), (route.path, found)
