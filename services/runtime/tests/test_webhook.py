"""FUNCTION.WEBHOOK calls: request shape, response parsing and bounds, failures, the SSRF guard."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from parley_common.netguard import guarded_client
from parley_runtime.blueprint.interpreter import WebhookCall
from parley_runtime.blueprint.webhook import call_webhook


def call(url: str = "https://crm.example/hook", **kwargs: object) -> WebhookCall:
    values: dict[str, object] = {"node_id": "h", "url": url, "method": "POST", "headers": {}, "body": None}
    values["timeout_s"] = 2.0
    values.update(kwargs)
    return WebhookCall(**values)  # type: ignore[arg-type]


async def test_json_body_headers_and_json_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"vip": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await call_webhook(client, call(headers={"X-Key": "k"}, body={"a": 1}), max_bytes=1000)
    assert (result.ok, result.value) == (True, {"vip": True})
    assert json.loads(seen[0].content) == {"a": 1} and seen[0].headers["x-key"] == "k"


async def test_text_body_and_text_answer_and_error_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"].startswith("text/plain")
        return httpx.Response(503, text="busy")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await call_webhook(client, call(body="hello"), max_bytes=1000)
    assert (result.ok, result.value, result.error) == (False, "busy", "HTTP 503")


async def test_response_size_is_bounded_and_timeouts_are_reported() -> None:
    def big(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="x" * 5000)

    async with httpx.AsyncClient(transport=httpx.MockTransport(big)) as client:
        result = await call_webhook(client, call(), max_bytes=1000)
    assert not result.ok and "exceeds 1000 bytes" in (result.error or "")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        result = await call_webhook(client, call(), max_bytes=1000)
    assert not result.ok and "no answer within 2 s" in (result.error or "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/x", "loopback address"),
        ("http://localhost/x", "loopback address"),
        ("http://10.1.2.3/x", "private address"),
        ("http://169.254.169.254/latest/meta-data", "link-local address"),
        ("ftp://example.com/x", "not an http(s) URL"),
        ("not a url", "not an http(s) URL"),
    ],
)
async def test_private_and_odd_destinations_are_refused(url: str, reason: str) -> None:
    async with guarded_client() as client:
        result = await call_webhook(client, call(url), max_bytes=1000)
    assert not result.ok and reason in (result.error or "")


class Hits(BaseHTTPRequestHandler):
    count = 0

    def do_POST(self) -> None:
        Hits.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


async def test_a_rebinding_name_never_reaches_the_private_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver answers a public address to the first lookup and 127.0.0.1 to the next: the call
    goes to the address that was checked (unreachable here), never to the local server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("crm.rebind.test", b"crm.rebind.test"):
            answers.append("93.184.216.34" if not answers else "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], int(p or 0)))]
        return real(host, p, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        async with guarded_client() as client:
            result = await call_webhook(
                client, call(f"http://crm.rebind.test:{port}/hook", timeout_s=0.5), max_bytes=1000
            )
    finally:
        server.shutdown()
        server.server_close()
    assert not result.ok
    assert Hits.count == 0 and answers == ["93.184.216.34"]


async def test_private_destinations_are_allowed_when_the_setting_says_so() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async with guarded_client(lambda: False) as client:
            result = await call_webhook(
                client, call(f"http://127.0.0.1:{server.server_address[1]}/hook"), max_bytes=1000
            )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.ok, result.value) == (True, {})
