"""`LLMError` and the mapping of provider failures (HTTP statuses, error bodies, in-stream error
events) onto the registered `llm.*` codes.

The provider's own error text goes to `detail` (logs) and never into the envelope's message or
params: it can echo parts of the API key or of the prompt.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from parley_common.errors import Codes, ErrorCode, ParleyError

# Statuses worth another attempt (529: Anthropic "overloaded").
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
_NOT_RETRYABLE_TYPES = frozenset({"insufficient_quota"})

_TYPE_CODES: dict[str, ErrorCode] = {
    "rate_limit_error": Codes.LLM_RATE_LIMITED,
    "rate_limit_exceeded": Codes.LLM_RATE_LIMITED,
    "insufficient_quota": Codes.LLM_RATE_LIMITED,
    "authentication_error": Codes.LLM_AUTH_FAILED,
    "permission_error": Codes.LLM_AUTH_FAILED,
    "invalid_api_key": Codes.LLM_AUTH_FAILED,
    "invalid_request_error": Codes.LLM_BAD_REQUEST,
    "not_found_error": Codes.LLM_BAD_REQUEST,
    "request_too_large": Codes.LLM_BAD_REQUEST,
    "context_length_exceeded": Codes.LLM_BAD_REQUEST,
    "timeout_error": Codes.LLM_TIMEOUT,
    "overloaded_error": Codes.LLM_UNAVAILABLE,
    "api_error": Codes.LLM_UNAVAILABLE,
    "server_error": Codes.LLM_UNAVAILABLE,
}


class LLMError(ParleyError):
    """A provider failed. `code` is one of the `llm.*` codes; `provider` names the engine."""

    def __init__(
        self,
        code: ErrorCode,
        provider: str,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        retryable: bool = False,
    ) -> None:
        params: dict[str, Any] = {"provider": provider}
        if retry_after is not None:
            params["retry_after"] = retry_after
        if upstream_status is not None:
            params["upstream_status"] = upstream_status
        if code is Codes.LLM_PROTOCOL_ERROR and detail:
            params["detail"] = detail  # our own wording, safe to show
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
        super().__init__(code, params=params, headers=headers)
        self.provider = provider
        self.detail = detail
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code.code}: {self.message}" + (f" ({self.detail})" if self.detail else "")


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait: OpenAI's `retry-after-ms`, else `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """(type or code, message) from the error body shapes seen in the wild: OpenAI and Anthropic
    `{"error": {...}}`, Ollama `{"error": "..."}`, Gemini `[{"error": {...}}]`, Mistral
    `{"message": ...}` / `{"detail": [...]}`."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return None, text[:300] or None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if not isinstance(doc, dict):
        return None, None
    err = doc.get("error", doc)
    if isinstance(err, str):
        return None, err[:300]
    if not isinstance(err, dict):
        return None, None
    kind = err.get("type") or err.get("code") or err.get("status")
    message = err.get("message") or err.get("detail")
    if message is not None and not isinstance(message, str):
        message = json.dumps(message)
    return (str(kind) if isinstance(kind, str | int) else None), (message[:300] if message else None)


def error_from_status(provider: str, status: int, headers: httpx.Headers, body: bytes) -> LLMError:
    kind, message = _error_fields(body)
    retry_after = parse_retry_after(headers)
    if status in (401, 403):
        code = Codes.LLM_AUTH_FAILED
    elif status == 429:
        code = Codes.LLM_RATE_LIMITED
    elif status in (408, 504):
        code = Codes.LLM_TIMEOUT
    elif status >= 500:
        code = Codes.LLM_UNAVAILABLE
    else:
        code = Codes.LLM_BAD_REQUEST
    retryable = status in RETRYABLE_STATUSES and kind not in _NOT_RETRYABLE_TYPES
    detail = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    return LLMError(
        code,
        provider,
        detail,
        retry_after=retry_after if code is Codes.LLM_RATE_LIMITED or retryable else None,
        upstream_status=status,
        retryable=retryable,
    )


def error_from_payload(provider: str, payload: Any) -> LLMError:
    """An error the provider reported inside a 200 stream (never retried: output may have begun)."""
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    kind: str | None = None
    message: str | None = None
    if isinstance(err, dict):
        raw_kind = err.get("type") or err.get("code")
        kind = str(raw_kind) if raw_kind is not None else None
        message = str(err.get("message") or "")[:300] or None
    elif isinstance(err, str):
        message = err[:300]
    code = _TYPE_CODES.get(kind or "", Codes.LLM_UNAVAILABLE)
    if kind and kind.isdigit():
        code = error_from_status(provider, int(kind), httpx.Headers(), b"").code
    detail = "stream error" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    return LLMError(code, provider, detail)


def protocol_error(provider: str, detail: str) -> LLMError:
    return LLMError(Codes.LLM_PROTOCOL_ERROR, provider, detail)


def transport_error(provider: str, exc: httpx.HTTPError, *, before_response: bool) -> LLMError:
    """Network failures. Only failures before any response byte may be retried."""
    if isinstance(exc, httpx.ConnectTimeout):
        return LLMError(Codes.LLM_TIMEOUT, provider, f"connect timeout: {exc}", retryable=before_response)
    if isinstance(exc, httpx.TimeoutException):
        # A read timeout may mean the provider is still working on the request: not retried.
        return LLMError(Codes.LLM_TIMEOUT, provider, f"{type(exc).__name__}: {exc}")
    # Refused or reset connections, or a pooled connection the server had closed: nothing was
    # answered, so another attempt cannot double a reply.
    retryable = before_response and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
    return LLMError(Codes.LLM_UNAVAILABLE, provider, f"{type(exc).__name__}: {exc}", retryable=retryable)
