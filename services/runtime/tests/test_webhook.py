"""FUNCTION.WEBHOOK calls: request shape, response parsing and bounds, failures, the SSRF guard."""

from __future__ import annotations

import json

import httpx
import pytest

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
        result = await call_webhook(
            client, call(headers={"X-Key": "k"}, body={"a": 1}), allow_private=True, max_bytes=1000
        )
    assert (result.ok, result.value) == (True, {"vip": True})
    assert json.loads(seen[0].content) == {"a": 1} and seen[0].headers["x-key"] == "k"


async def test_text_body_and_text_answer_and_error_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"].startswith("text/plain")
        return httpx.Response(503, text="busy")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await call_webhook(client, call(body="hello"), allow_private=True, max_bytes=1000)
    assert (result.ok, result.value, result.error) == (False, "busy", "HTTP 503")


async def test_response_size_is_bounded_and_timeouts_are_reported() -> None:
    def big(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="x" * 5000)

    async with httpx.AsyncClient(transport=httpx.MockTransport(big)) as client:
        result = await call_webhook(client, call(), allow_private=True, max_bytes=1000)
    assert not result.ok and "exceeds 1000 bytes" in (result.error or "")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        result = await call_webhook(client, call(), allow_private=True, max_bytes=1000)
    assert not result.ok and "no answer within 2 s" in (result.error or "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/x", "non-public"),
        ("http://localhost/x", "non-public"),
        ("http://10.1.2.3/x", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("ftp://example.com/x", "not an http(s) URL"),
        ("not a url", "not an http(s) URL"),
    ],
)
async def test_private_and_odd_destinations_are_refused(url: str, reason: str) -> None:
    def never(_: httpx.Request) -> httpx.Response:
        raise AssertionError("must not be called")

    async with httpx.AsyncClient(transport=httpx.MockTransport(never)) as client:
        result = await call_webhook(client, call(url), allow_private=False, max_bytes=1000)
    assert not result.ok and reason in (result.error or "")
