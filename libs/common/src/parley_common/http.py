"""FastAPI application factory shared by every service.

It gives each service the same edges: the `Error` envelope for every failure (never a bare 500 or
a framework-shaped error), a request body size limit, the client version gate (426), `/version`,
`/healthz`, `/readyz`, request logs and tracing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from packaging.version import InvalidVersion, Version
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_common import metrics
from parley_common.apidocs import add_api_docs
from parley_common.errors import Codes, Error, ErrorCode, ErrorEnvelope, ParleyError, envelope
from parley_common.kit.health import Readiness, ReadinessReport
from parley_common.outages import OUTAGE_ERRORS, describe
from parley_common.settings import CommonSettings
from parley_common.telemetry import redact_span_urls

log = structlog.get_logger(__name__)

# Every operation documents the envelope as its default response, so generated clients and
# schemathesis know the shape of every error.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorEnvelope, "description": "Error"}
}


class VersionInfo(BaseModel):
    """`GET /api/version` (ServiceAi contract) and `GET /version`; camelCase as the contract has it."""

    apiVersion: str
    minClientVersion: str


class UpgradeRequiredEnvelope(Error):
    """HTTP 426 of the client version gate, on every route: the `Error` envelope
    (`client.upgrade_required`) plus the two fields of `GET /api/version`, so a ServiceAi client
    reads what it must upgrade to without a second request. (The ServiceAi excerpt names this
    schema but elides its body; docs/webrtc.md.)"""

    apiVersion: str
    minClientVersion: str


def error_response(err: ErrorCode | ParleyError, *, params: dict[str, Any] | None = None) -> JSONResponse:
    if isinstance(err, ParleyError):
        body, status, headers = err.envelope(), err.status, err.headers
    else:
        body, status, headers = envelope(err, params=params), err.status, {}
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


# A JSON `\u0000` escape that is not itself escaped (an odd number of backslashes before `u0000`).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class BodyLimitMiddleware:
    """Reject bodies over `limit` bytes with 413, and NUL characters anywhere with 422.

    The body is read up front (at most `limit` bytes are ever held) and replayed to the app, so an
    oversized chunked upload is refused before any handler sees it. NUL is refused here, once for
    every service, because PostgreSQL text cannot hold it: letting it through would turn bad input
    into a database error.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            await _nul_response()(scope, receive, send)
            return
        too_large = error_response(Codes.BODY_TOO_LARGE, params={"limit": self.limit})
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _JSON_NUL.search(body):  # raw NUL bytes are not JSON at all: the parser answers 400
            await _nul_response()(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HeaderLimitMiddleware:
    """Refuse a request whose header section exceeds `limit` bytes with 431 and the envelope.

    HTTP servers bound headers each in their own way (the edge's Go parser answers in plain text,
    uvicorn accepts megabytes), so every service draws the line itself, in the platform's shape.
    A WebSocket upgrade gets the same HTTP answer through the ASGI `websocket.http.response`
    extension where the server has it, a refused upgrade otherwise.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.too_large(scope):
            await self.app(scope, receive, send)
            return
        await self.refuse(scope, receive, send)

    def too_large(self, scope: Scope) -> bool:
        return header_bytes(scope) > self.limit

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 431 answer (a refused upgrade for a WebSocket without the HTTP-response extension)."""
        response = error_response(Codes.HEADERS_TOO_LARGE, params={"limit": self.limit})
        if scope["type"] == "http":
            await response(scope, receive, send)
        elif "websocket.http.response" in scope.get("extensions", {}):
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
            await send({"type": "websocket.http.response.start", "status": 431, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": Codes.HEADERS_TOO_LARGE.code})


def header_bytes(scope: Scope) -> int:
    """Size of the request's header lines as sent (`name: value\r\n` each)."""
    return sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


def _nul_response() -> JSONResponse:
    return error_response(
        ParleyError(Codes.VALIDATION_FAILED, "NUL characters are not allowed.", params={"errors": []})
    )


class ClientVersionGate:
    """HTTP requests with an `X-Client-Version` whose major is below `min_version` get 426 (the
    `Error` envelope with the two fields of `GET /api/version`); one that is no version gets 422.

    Plain ASGI, as every middleware here. Starlette's `BaseHTTPMiddleware` (`app.middleware("http")`)
    relays the app's response through a task group and ends it with an empty message of its own,
    sent after the client already has every byte: the edge then sent its next request on the
    connection, and uvicorn started that one from inside this one's task (`kit.runner.server_config`).
    """

    def __init__(self, app: ASGIApp, min_version: str, api_version: str) -> None:
        self.app, self.min_version, self.api_version = app, min_version, api_version
        self.minimum = Version(min_version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        raw = next((value for name, value in scope["headers"] if name == b"x-client-version"), None)
        if raw is None:
            return None
        given = raw.decode("latin-1")
        try:
            client = Version(given)
        except InvalidVersion:
            return error_response(
                ParleyError(
                    Codes.VALIDATION_FAILED,
                    "X-Client-Version is not a valid version string.",
                    params={"header": "X-Client-Version"},
                )
            )
        if client.major >= self.minimum.major:
            return None
        base = envelope(
            Codes.CLIENT_UPGRADE_REQUIRED, params={"client_version": given, "min_version": self.min_version}
        )
        body = UpgradeRequiredEnvelope(
            **base.model_dump(), apiVersion=self.api_version, minClientVersion=self.min_version
        )
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=426)


class AccessLog:
    """Each HTTP request's `http.request` log line, count and duration (by route template), taken
    when its response starts. A request that raised before it answered is recorded as the 500 the
    outermost handler answers; one cancelled (a server shutting down) is not recorded."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self.record(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not answered:
                self.record(scope, 500, time.perf_counter() - started)
            raise

    def record(self, scope: Scope, status: int, elapsed: float) -> None:
        # The route template (`/orgs/{orgSlug}`), never the raw path: label values stay bounded.
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        if route not in ("/metrics", "/healthz", "/readyz"):
            metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(self.service, method, route).observe(elapsed)
        log.info(
            "http.request",
            method=method,
            path=scope["path"],
            status=status,
            duration_ms=round(elapsed * 1000, 2),
        )


def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(Codes.MALFORMED_JSON)
    details = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors[:20]
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid"}
    message = f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
    return error_response(ParleyError(Codes.VALIDATION_FAILED, message, params={"errors": details}))


def _http_exception_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: Codes.ROUTE_NOT_FOUND, 405: Codes.METHOD_NOT_ALLOWED, 413: Codes.BODY_TOO_LARGE}.get(
        exc.status_code
    )
    if code is None:
        code = Codes.VALIDATION_FAILED if exc.status_code < 500 else Codes.INTERNAL
        return error_response(ParleyError(code, str(exc.detail), status=exc.status_code))
    return error_response(code)


def _parley_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ParleyError)
    return error_response(exc)


def _outage_handler(request: Request, exc: Exception) -> JSONResponse:
    """Redis or the bus did not answer: 503 `service.unavailable` (the client may retry), logged as
    a warning without a traceback. Registered per exception class, so Starlette treats it as
    handled (a handler for `Exception` itself would re-raise it to the server's error log)."""
    log.warning("http.dependency_unavailable", path=request.url.path, error=describe(exc))
    return error_response(Codes.SERVICE_UNAVAILABLE)


def _unexpected_handler(_: Request, exc: Exception) -> JSONResponse:
    log.error("http.unhandled", exc_info=exc)
    return error_response(Codes.INTERNAL)


def create_app(
    settings: CommonSettings,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    readiness: Readiness | None = None,
    app_class: type[FastAPI] = FastAPI,  # a subclass of the service's own (the gateway's LanedApp)
) -> FastAPI:
    app = app_class(
        title=title,
        description=description,
        version=settings.api_version,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # Our own Swagger UI below, from the installation; FastAPI's loads it from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    add_api_docs(app, openapi_url="/openapi.json", title=title)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(ParleyError, _parley_error_handler)
    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _outage_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
    app.add_middleware(
        ClientVersionGate, min_version=settings.min_client_version, api_version=settings.api_version
    )
    app.add_middleware(AccessLog, service=settings.service_name)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(HeaderLimitMiddleware, limit=settings.max_header_bytes)

    checks = readiness or Readiness()
    app.state.readiness = checks

    @app.get("/version", tags=["meta"], response_model=VersionInfo, operation_id="getVersion")
    async def version() -> VersionInfo:
        """API version and the minimum client version this server accepts."""
        return VersionInfo(apiVersion=settings.api_version, minClientVersion=settings.min_client_version)

    @app.get(
        "/api/version",
        tags=["meta"],
        response_model=VersionInfo,
        operation_id="getApiVersion",
        summary="API version and minimum client version (ServiceAi contract path)",
    )
    async def api_version() -> VersionInfo:
        """The same as `GET /version`, at the ServiceAi contract's path. A client sending an
        `X-Client-Version` whose major is below `minClientVersion` gets 426 on every route."""
        return VersionInfo(apiVersion=settings.api_version, minClientVersion=settings.min_client_version)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["meta"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["meta"], include_in_schema=False)
    async def readyz() -> JSONResponse:
        report: ReadinessReport = await checks.report()
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    for router in routers:
        app.include_router(router)
    # No server span around a WebSocket (`^wss?://`): the middleware would touch it on every frame
    # sent (a tenth of the gateway's CPU per turn), and a socket's span lasting the whole session
    # says nothing; a turn's trace is built by the services' own spans (`realtime.input` on).
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="healthz,readyz,metrics,^wss?://",
        exclude_spans=["receive", "send"],
        server_request_hook=redact_span_urls,  # `?token=…` of a WebSocket URL never stays on a span
    )
    return app
