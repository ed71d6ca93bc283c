"""Every service refuses oversized request headers with 431 and the envelope, HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from parley_common.http import create_app, header_bytes
from parley_common.settings import CommonSettings

LIMIT = 4096


def app_under_test() -> object:
    router = APIRouter()

    @router.get("/thing")
    async def thing() -> dict[str, bool]:
        return {"ok": True}

    @router.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    return create_app(CommonSettings(max_header_bytes=LIMIT), title="t", routers=[router])


def test_header_bytes_counts_each_line_as_sent() -> None:
    assert header_bytes({"headers": [(b"host", b"x"), (b"x-a", b"bb")]}) == len("host: x\r\nx-a: bb\r\n")


async def test_http_over_the_limit_gets_431_envelope() -> None:
    transport = httpx.ASGITransport(app=app_under_test())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/thing", headers={"x-a": "a" * 3000})).status_code == 200
        refused = await client.get("/thing", headers={"x-a": "a" * LIMIT})
    assert refused.status_code == 431
    body = refused.json()
    assert body["code"] == "request.headers_too_large" and body["params"] == {"limit": LIMIT}
    assert body["doc_url"].endswith("#request-headers-too-large")


@pytest.fixture
async def served() -> AsyncIterator[int]:
    config = uvicorn.Config(app_under_test(), host="127.0.0.1", port=0, log_config=None, lifespan="off")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await task


async def test_websocket_upgrade_over_the_limit_gets_the_same_http_answer(served: int) -> None:
    async with connect(f"ws://127.0.0.1:{served}/ws") as ws:
        assert await ws.recv() == "hello"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{served}/ws", additional_headers={"x-a": "a" * LIMIT}):
            pass
    response = refused.value.response
    assert response.status_code == 431
    assert json.loads(response.body)["code"] == "request.headers_too_large"
