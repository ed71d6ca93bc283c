"""The socket routes run in front of every layer that only serves HTTP (FastAPI's and Starlette's
included), with the header limit still applied."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from parley_common.http import create_app
from parley_common.settings import CommonSettings
from parley_devstack.testing import serving
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import GatewaySettings
from parley_session_gateway.socket_lane import LanedApp, SocketLane, socket_endpoints

LIMIT = 4096


def _socket_app(*, lane: bool) -> tuple[FastAPI, list[list[str]]]:
    """An app built as every service's is, with one socket route that answers with how deep it
    runs; `lane`: a `LanedApp` with the route in its lane, as the gateway's."""
    stacks: list[list[str]] = []
    router = APIRouter()

    async def endpoint(websocket: WebSocket) -> None:
        stacks.append([f.frame.f_globals.get("__name__", "?") for f in inspect.stack()])
        await websocket.accept()
        await websocket.send_text(json.dumps(len(stacks[-1])))
        await websocket.close()

    router.add_websocket_route("/sock", endpoint)
    settings = CommonSettings(max_header_bytes=LIMIT)
    if not lane:
        return create_app(settings, title="t", routers=[router]), stacks
    app = create_app(settings, title="t", routers=[router], app_class=LanedApp)
    assert isinstance(app, LanedApp)
    app.add_socket_lane(socket_endpoints([router]), header_limit=LIMIT)
    return app, stacks


@pytest.fixture
async def laned() -> AsyncIterator[tuple[int, list[list[str]]]]:
    app, stacks = _socket_app(lane=True)
    async with serving(app) as port:
        yield port, stacks


async def _depth(port: int) -> int:
    async with connect(f"ws://127.0.0.1:{port}/sock") as ws:
        depth = json.loads(await ws.recv())
    assert isinstance(depth, int)
    return depth


async def test_a_socket_runs_past_the_http_middleware_and_routing(laned: tuple[int, list[list[str]]]) -> None:
    port, stacks = laned
    depth = await _depth(port)
    # In front of FastAPI's own call and everything it and Starlette wrap the app in.
    skipped = (
        "starlette.routing", "fastapi.routing", "starlette.middleware", "fastapi.middleware",
        "parley_common.http", "fastapi.applications", "fastapi.telemetry", "fastapi._body_limit",
        "starlette.applications", "opentelemetry",
    )  # fmt: skip
    passed = {name for name in stacks[-1] if name.startswith(skipped)}
    assert passed == set(), passed
    plain, plain_stacks = _socket_app(lane=False)
    async with serving(plain) as plain_port:
        without = await _depth(plain_port)
    # Each layer left out is an awaiting coroutine fewer for as long as the socket is open.
    assert without - depth >= 20, (without, depth)
    assert {"starlette.routing", "parley_common.http"} <= set(plain_stacks[-1])


async def test_a_socket_over_the_header_limit_gets_431_and_never_reaches_its_route(
    laned: tuple[int, list[list[str]]],
) -> None:
    port, stacks = laned
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{port}/sock", additional_headers={"x-a": "a" * LIMIT}):
            pass
    assert refused.value.response.status_code == 431
    assert json.loads(refused.value.response.body)["code"] == "request.headers_too_large"
    assert stacks == []


async def test_other_paths_and_plain_http_take_the_app_as_before(laned: tuple[int, list[list[str]]]) -> None:
    port, stacks = laned
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{port}/elsewhere"):
            pass
    assert refused.value.response.status_code == 403  # no such socket route: Starlette's refusal
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        missing = await client.get("/sock")  # the socket's path over plain HTTP: the app's 404
    assert missing.status_code == 404 and missing.json()["code"] == "request.route_not_found"
    assert stacks == []


def test_the_gateway_serves_both_sockets_through_its_lane_first() -> None:
    app: Any = build_app(GatewaySettings())
    assert isinstance(app, LanedApp) and isinstance(app.lane, SocketLane)
    assert set(app.lane.routes) == {"/realtime", "/chat/ws"}
    assert app.lane.headers.limit == GatewaySettings().max_header_bytes
    assert SocketLane not in [cast(Any, m).cls for m in app.user_middleware]
