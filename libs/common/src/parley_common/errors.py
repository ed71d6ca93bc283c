"""The `Error` envelope of the spec and the one registry of error codes.

Every error any service returns (HTTP body, WebSocket `error` event, bus error reply) uses a code
registered here. Each code has a section in docs/errors.md whose anchor is `anchor(code)`; a test
keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from parley_common.settings import common_settings


class ErrorEnvelope(BaseModel):
    """`components.schemas.Error` of the Kivox spec."""

    code: str = Field(description="Stable dot-notation error identifier, e.g. `resource.not_found`.")
    message: str = Field(description="Human-readable description of the error.")
    doc_url: str = Field(description="Link to the documentation page for this error code.")
    params: dict[str, Any] | None = Field(
        default=None, description="Named values used to render `message`, when the error has any."
    )


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str  # default human-readable message; may use {param} placeholders

    @property
    def anchor(self) -> str:
        return anchor(self.code)


def anchor(code: str) -> str:
    return code.replace(".", "-").replace("_", "-")


REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, status: int, message: str) -> ErrorCode:
    if code in REGISTRY:  # pragma: no cover - guards against copy-paste at import time
        raise ValueError(f"duplicate error code {code}")
    entry = ErrorCode(code, status, message)
    REGISTRY[code] = entry
    return entry


class Codes:
    """Namespace of every registered error code."""

    # Request shape
    MALFORMED_JSON = _register("request.malformed_json", 400, "The request body is not valid JSON.")
    VALIDATION_FAILED = _register("request.validation_failed", 422, "The request failed validation.")
    BODY_TOO_LARGE = _register("request.body_too_large", 413, "The request body exceeds {limit} bytes.")
    UNSUPPORTED_MEDIA_TYPE = _register(
        "request.unsupported_media_type", 415, "The request body must be application/json."
    )
    METHOD_NOT_ALLOWED = _register("request.method_not_allowed", 405, "Method not allowed on this path.")
    ROUTE_NOT_FOUND = _register("request.route_not_found", 404, "No such endpoint.")
    CLIENT_UPGRADE_REQUIRED = _register(
        "client.upgrade_required", 426, "Client version {client_version} is below the minimum {min_version}."
    )
    # Authentication and authorization
    UNAUTHENTICATED = _register("auth.unauthenticated", 401, "Authentication is required.")
    INVALID_CREDENTIALS = _register("auth.invalid_credentials", 401, "Email or password is incorrect.")
    CREDENTIAL_EXPIRED = _register("auth.credential_expired", 401, "The credential has expired.")
    CREDENTIAL_REVOKED = _register("auth.credential_revoked", 401, "The credential has been revoked.")
    FORBIDDEN = _register("auth.forbidden", 403, "You do not have permission to do this.")
    INSUFFICIENT_ROLE = _register(
        "auth.insufficient_role", 403, "This requires the {required} role or higher."
    )
    INSUFFICIENT_SCOPE = _register("auth.insufficient_scope", 403, "The API key lacks the {scope} scope.")
    TURNSTILE_FAILED = _register(
        "auth.turnstile_failed", 403, "The Turnstile challenge could not be verified."
    )
    EMAIL_TAKEN = _register("auth.email_taken", 409, "An account with this email already exists.")
    RESET_TOKEN_INVALID = _register(
        "auth.reset_token_invalid", 400, "The password reset token is invalid, used or expired."
    )
    # Organizations
    ORG_SLUG_TAKEN = _register("org.slug_taken", 409, "An organization with this slug already exists.")
    ORG_LAST_OWNER = _register("org.last_owner", 409, "An organization must keep at least one owner.")
    MEMBER_EXISTS = _register("org.member_exists", 409, "This user is already a member.")
    # Generic resources
    NOT_FOUND = _register("resource.not_found", 404, "The {resource} was not found.")
    CONFLICT = _register("resource.conflict", 409, "The request conflicts with the current state.")
    # Limits and availability
    RATE_LIMITED = _register("rate_limit.exceeded", 429, "Too many requests; retry in {retry_after} seconds.")
    BUS_TIMEOUT = _register("bus.timeout", 504, "A dependent service did not answer in time.")
    BUS_BAD_MESSAGE = _register("bus.bad_message", 400, "The bus message is not valid: {detail}")
    SERVICE_UNAVAILABLE = _register("service.unavailable", 503, "The service is not ready.")
    INTERNAL = _register("internal.error", 500, "An unexpected error occurred.")


class ParleyError(Exception):
    """Raise anywhere in a service; the HTTP layer renders it as the envelope with its status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        self.code = code
        self.params = params
        self.headers = headers or {}
        self.status = status or code.status
        self.message = message or _render(code.message, params)
        super().__init__(f"{code.code}: {self.message}")

    def envelope(self) -> ErrorEnvelope:
        return envelope(self.code, self.message, self.params)


def _render(template: str, params: dict[str, Any] | None) -> str:
    try:
        return template.format(**(params or {}))
    except (KeyError, IndexError, ValueError):
        return template


def doc_url(code: ErrorCode) -> str:
    return f"{common_settings().docs_url}#{code.anchor}"


def envelope(
    code: ErrorCode, message: str | None = None, params: dict[str, Any] | None = None
) -> ErrorEnvelope:
    return ErrorEnvelope(
        code=code.code, message=message or _render(code.message, params), doc_url=doc_url(code), params=params
    )
