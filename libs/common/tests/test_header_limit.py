"""Every service refuses oversized request headers with 431 and the envelope, HTTP and WebSocket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from parley_common.http import header_bytes
from parley_common.settings import CommonSettings
from parley_devstack.testing import probe_app, serving

LIMIT = 4096


def app_under_test() -> Any:
    return probe_app(
        CommonSettings(max_header_bytes=LIMIT), http_path="/thing", ws_path="/ws", greeting="hello"
    )


def test_header_bytes_counts_each_line_as_sent() -> None:
    assert header_bytes({"headers": [(b"host", b"x"), (b"x-a", b"bb")]}) == len("host: x\r\nx-a: bb\r\n")


async def test_http_over_the_limit_gets_431_envelope() -> None:
    transport = httpx.ASGITransport(app=app_under_test())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/thing", headers={"x-a": "a" * 3000})).status_code == 200
        refused = await client.get("/thing", headers={"x-a": "a" * LIMIT})
    assert refused.status_code == 431
    body = refused.json()
    assert body["code"] == "request.headers_too_large" and body["params"] == {"limit": LIMIT}
    assert body["doc_url"].endswith("#request-headers-too-large")


@pytest.fixture
async def served() -> AsyncIterator[int]:
    async with serving(app_under_test()) as port:
        yield port


async def test_websocket_upgrade_over_the_limit_gets_the_same_http_answer(served: int) -> None:
    async with connect(f"ws://127.0.0.1:{served}/ws") as ws:
        assert await ws.recv() == "hello"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{served}/ws", additional_headers={"x-a": "a" * LIMIT}):
            pass
    response = refused.value.response
    assert response.status_code == 431
    assert json.loads(response.body)["code"] == "request.headers_too_large"
