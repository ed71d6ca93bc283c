"""FUNCTION.WEBHOOK: one HTTP call with the node's timeout, its response bounded in size.

The client is `parley_common.netguard.guarded_client`: unless `PARLEY_RUNTIME_WEBHOOK_ALLOW_PRIVATE`
is set, destinations that resolve to loopback, private, link-local, multicast or reserved addresses
are refused (an agent author must not be able to reach the platform's own network), checked on the
very address the connection goes to; redirects are not followed for the same reason.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from parley_common.netguard import BlockedDestination
from parley_common.redact import redact_text
from parley_runtime.blueprint.interpreter import WebhookCall, WebhookResult


def _parse(body: bytes, content_type: str) -> Any:
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


async def call_webhook(client: httpx.AsyncClient, call: WebhookCall, *, max_bytes: int) -> WebhookResult:
    parts = urlsplit(call.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not the URL itself: its rendered template may hold the agent's secrets.
        return WebhookResult(ok=False, error=f"not an http(s) URL (scheme {parts.scheme[:20]!r})")
    headers = dict(call.headers)
    content: str | None = None
    payload: Any = None
    if isinstance(call.body, dict):
        payload = call.body
    elif isinstance(call.body, str) and call.method != "GET":
        content = call.body
        try:
            json.loads(content)
        except ValueError:
            headers.setdefault("content-type", "text/plain; charset=utf-8")
        else:
            headers.setdefault("content-type", "application/json")
    try:
        async with client.stream(
            call.method,
            call.url,
            headers=headers,
            content=content,
            json=payload,
            timeout=call.timeout_s,
            follow_redirects=False,
        ) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    return WebhookResult(ok=False, error=f"the response exceeds {max_bytes} bytes")
                chunks.append(chunk)
            value = _parse(b"".join(chunks), response.headers.get("content-type", ""))
            if not response.is_success:
                return WebhookResult(ok=False, value=value, error=f"HTTP {response.status_code}")
            return WebhookResult(ok=True, value=value)
    except BlockedDestination as exc:
        return WebhookResult(ok=False, error=f"blocked destination {exc.host}: {exc.reason}")
    except httpx.TimeoutException:
        return WebhookResult(ok=False, error=f"no answer within {call.timeout_s:g} s")
    except httpx.HTTPError as exc:
        return WebhookResult(ok=False, error=f"{type(exc).__name__}: {redact_text(str(exc))}"[:500])
