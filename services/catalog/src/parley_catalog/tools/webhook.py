"""Calling a webhook tool: address guard, timeout, retries for idempotent methods, size limit.

Arguments go as the JSON body for POST/PUT/PATCH and as query parameters for GET/DELETE. A 2xx JSON
object carrying a boolean `success` is taken as a ready-made `{success, message, error, code,
data, action}` envelope; any other 2xx body becomes `data`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from pydantic import ValidationError

from parley_catalog.jsonsafe import ensure_clean
from parley_catalog.settings import CatalogSettings
from parley_common.catalog_contract import ToolResult
from parley_common.errors import Codes, ErrorCode
from parley_common.netguard import BlockedDestination
from parley_common.redact import redact_text

log = structlog.get_logger(__name__)

IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
_ENVELOPE_FIELDS = ("success", "message", "error", "code", "data", "action")


@dataclass(frozen=True)
class WebhookCall:
    name: str
    url: str
    method: str
    headers: dict[str, str]
    timeout_s: float
    arguments: dict[str, Any] = field(default_factory=dict)


class _TooLarge(Exception):
    pass


def failure(code: ErrorCode, error: str, *, data: Any = None) -> ToolResult:
    return ToolResult(success=False, error=error, code=code.code, data=data)


async def execute(client: httpx.AsyncClient, call: WebhookCall, settings: CatalogSettings) -> ToolResult:
    url = httpx.URL(call.url)
    headers = {"User-Agent": "parley-catalog", "X-Parley-Tool": call.name, **call.headers}
    params: dict[str, str] | None = None
    body: bytes | None = None
    if call.method in ("GET", "DELETE"):
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in call.arguments.items()}
    else:
        body = json.dumps(call.arguments).encode()
        headers.setdefault("Content-Type", "application/json")
    attempts = 1 + (settings.catalog_tools_max_retries if call.method in IDEMPOTENT else 0)
    result = failure(Codes.TOOL_WEBHOOK_FAILED, "not attempted")
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(settings.catalog_tools_retry_backoff_s * 2 ** (attempt - 1))
        result, retryable = await _attempt(client, call, url, params, body, headers, settings)
        if not retryable:
            break
        log.info("catalog.tool_retry", tool=call.name, attempt=attempt + 1, code=result.code)
    return result


async def _attempt(
    client: httpx.AsyncClient,
    call: WebhookCall,
    url: httpx.URL,
    params: dict[str, str] | None,
    body: bytes | None,
    headers: dict[str, str],
    settings: CatalogSettings,
) -> tuple[ToolResult, bool]:
    """One request; (result, worth retrying)."""
    limit = settings.catalog_tools_max_response_bytes
    request = client.build_request(
        call.method,
        url,
        params=params,
        content=body,
        headers=headers,
        timeout=httpx.Timeout(call.timeout_s),
    )
    try:
        # The overall deadline also bounds a server that drips its body slowly.
        async with asyncio.timeout(call.timeout_s):
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                content = await _read_limited(response, limit)
            finally:
                await response.aclose()
    except BlockedDestination as exc:
        message = Codes.TOOL_DESTINATION_BLOCKED.message.format(host=exc.host, reason=exc.reason)
        return failure(Codes.TOOL_DESTINATION_BLOCKED, message), False
    except (TimeoutError, httpx.TimeoutException):
        return failure(Codes.TOOL_WEBHOOK_TIMEOUT, Codes.TOOL_WEBHOOK_TIMEOUT.message), True
    except _TooLarge:
        message = Codes.TOOL_RESPONSE_TOO_LARGE.message.format(limit=limit)
        return failure(Codes.TOOL_RESPONSE_TOO_LARGE, message), False
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {redact_text(str(exc))}"[:300]
        return failure(Codes.TOOL_WEBHOOK_FAILED, f"The webhook call failed: {detail}"), True
    data = _decode(content, response.headers.get("content-type", ""))
    if not response.is_success:
        error = f"The webhook answered HTTP {response.status_code}."
        return failure(Codes.TOOL_WEBHOOK_FAILED, error, data=data), response.status_code in RETRY_STATUSES
    if isinstance(data, dict) and isinstance(data.get("success"), bool):
        try:
            return ToolResult.model_validate({k: data[k] for k in _ENVELOPE_FIELDS if k in data}), False
        except ValidationError:
            pass  # not an envelope after all (say, a non-string `message`): plain data
    return ToolResult(success=True, data=data), False


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip()[:1] in ("{", "["):
        try:
            # Parsed JSON may hold lone surrogates (`"\ud800"`) that no response could encode.
            return ensure_clean(json.loads(text))
        except (ValueError, RecursionError):
            pass
    return text
