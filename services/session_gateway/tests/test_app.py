"""The gateway is ready exactly when NATS and Redis answer, and answers its bus ping; its socket
routes are plain Starlette routes that read their resume query by hand, refusing a bad one as
FastAPI did (close 1008 before the socket is accepted)."""

from __future__ import annotations

import pytest
from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from parley_devstack.testing import Infra, assert_ready_exactly_with
from parley_session_gateway.app import build_app
from parley_session_gateway.chat.router import router as chat_router
from parley_session_gateway.deps import BadResumeQuery, resume_of
from parley_session_gateway.realtime.router import router as realtime_router
from parley_session_gateway.resume import Resume
from parley_session_gateway.settings import GatewaySettings


async def test_ready_exactly_when_nats_and_redis_answer(infra: Infra) -> None:
    await assert_ready_exactly_with(build_app, GatewaySettings, infra, "session_gateway", "redis")


def test_the_socket_routes_solve_no_dependencies() -> None:
    """FastAPI's dependency solving was about half of what routing a socket to its endpoint cost."""
    routes = [*realtime_router.routes, *chat_router.routes]
    sockets = [r for r in routes if isinstance(r, WebSocketRoute)]
    assert {r.path for r in sockets} == {"/realtime", "/chat/ws"}
    assert not any(isinstance(r, APIWebSocketRoute) for r in routes)


def test_a_resume_query_is_read_as_fastapi_read_it() -> None:
    assert resume_of({}, "resume") is None
    assert resume_of({"resume": "", "last_event": "3"}, "resume") is None
    assert resume_of({"resume": "c1"}, "resume") == Resume(conversation_id="c1", last_event=0)
    assert resume_of({"session_id": "c1", "last_event": "7"}, "session_id") == Resume("c1", 7)
    assert resume_of({"resume": "c1"}, "session_id") is None
    assert resume_of({"resume": "x" * 64}, "resume") == Resume("x" * 64, 0)
    for bad in ({"resume": "x" * 65}, {"resume": "c1", "last_event": "-1"}, {"last_event": "one"}):
        with pytest.raises(BadResumeQuery):
            resume_of(bad, "resume")


@pytest.mark.parametrize("query", ["resume=c1&last_event=-1", "last_event=x", f"resume={'c' * 65}"])
@pytest.mark.parametrize("path", ["/realtime", "/chat/ws"])
def test_a_bad_resume_query_is_refused_before_the_socket_is_accepted(path: str, query: str) -> None:
    app = build_app(GatewaySettings())
    if path == "/chat/ws":
        query = query.replace("resume=", "session_id=")
    with pytest.raises(WebSocketDisconnect) as refused, TestClient(app).websocket_connect(f"{path}?{query}"):
        pass
    assert refused.value.code == 1008
