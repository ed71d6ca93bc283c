"""The edge's own endpoints: platform readiness, the merged OpenAPI document and the API docs.

A small process behind the edge (Caddy locally and in docker-compose), configured by env only:
- `PARLEY_EDGE_PEERS`: comma-separated `name=http://host:port` list of the services behind the edge;
- `PARLEY_HTTP_HOST` / `PARLEY_HTTP_PORT`: where it listens;
- `PARLEY_EDGE_RUN_STATE` (set by `parley run` only): its `.parley/run.json`, whose restart counts
  `/metrics` serves as `parley_devstack_restarts_total{process}`.

`GET /readyz` is 200 only when every peer's `/readyz` is; `GET /openapi.json` merges the peers'
documents into one OpenAPI 3.1 document; `GET /docs` is Swagger UI over it, its assets served from
the installation (`/docs/assets/*`, no CDN); `GET /errors` is docs/errors.md as HTML, the page every
error envelope's `doc_url` points to; `GET /play/` is the playground (docs/playground.md), static
files of this package under a strict Content-Security-Policy; `GET /metrics` is for Prometheus (the
edge never routes it here). Anything else gets the 404 error envelope, so the edge
answers unknown paths in the same shape as every service.

Run: `python -m parley_devstack.edge_meta`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import markdown
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import field_validator
from pydantic_settings import SettingsConfigDict
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_common.apidocs import add_api_docs
from parley_common.errors import Codes
from parley_common.http import HeaderLimitMiddleware, error_response
from parley_common.settings import CommonSettings

READY = "ready"
PLAYGROUND = Path(__file__).parent / "playground"
# The playground loads nothing from elsewhere and talks only to its own origin (HTTP and `/realtime`).
PLAYGROUND_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class PlaygroundHeaders:
    """`PLAYGROUND_HEADERS` on every response under `/play`. Plain ASGI, as the app factory's
    middlewares (`parley_common.http.ClientVersionGate` says why)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/play" or path.startswith("/play/")):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(PLAYGROUND_HEADERS)
            await send(message)

        await self.app(scope, receive, sending)


class EdgeMetaSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "edge_meta"
    # `name=http://host:port,...`; the order is the merge order of the OpenAPI documents.
    edge_peers: str = ""
    # Per-peer budget for /readyz; the edge's own answer stays fast.
    edge_peer_timeout_s: float = 2.0
    # Per-peer budget for /openapi.json: a service makes its document on the first request (the
    # catalog's takes ~0.5 s of CPU), which on a busy two-core machine took more than 2 s.
    edge_openapi_timeout_s: float = 15.0
    # The error reference served at /errors (relative paths are resolved from the working dir).
    edge_errors_doc: Path = Path("docs/errors.md")
    # `.parley/run.json` of `parley run`, for its restart counts; unset elsewhere.
    edge_run_state: Path | None = None

    @field_validator("edge_peers")
    @classmethod
    def _valid_peers(cls, value: str) -> str:
        parse_peers(value)
        return value

    @property
    def peers(self) -> dict[str, str]:
        return parse_peers(self.edge_peers)


def parse_peers(spec: str) -> dict[str, str]:
    peers: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"peer {item!r} is not of the form name=http://host:port")
        peers[name] = url
    return peers


async def _peer_ready(client: httpx.AsyncClient, url: str) -> str:
    """`ready`, or why not, in a few words."""
    try:
        response = await client.get(f"{url}/readyz")
    except httpx.TimeoutException:
        return "timeout"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    if response.status_code == 200:
        return READY
    try:
        checks = response.json().get("checks", {})
        failing = [f"{name}: {why}" for name, why in checks.items() if why != "ok"]
    except (ValueError, AttributeError):
        failing = []
    return "; ".join(failing) if failing else f"HTTP {response.status_code}"


async def _peer_openapi(client: httpx.AsyncClient, url: str, timeout_s: float) -> dict[str, Any] | None:
    try:
        response = await client.get(f"{url}/openapi.json", timeout=timeout_s)
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def merge_openapi(docs: list[dict[str, Any]], *, title: str, version: str) -> dict[str, Any]:
    """One OpenAPI 3.1 document from several: paths and components merged, later ones win."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The whole public API of Parley, as served by the edge.",
        },
        "paths": {},
        "components": {},
    }
    tags: dict[str, dict[str, Any]] = {}
    for doc in docs:
        merged["paths"].update(doc.get("paths") or {})
        for section, entries in (doc.get("components") or {}).items():
            if isinstance(entries, dict):
                merged["components"].setdefault(section, {}).update(entries)
        for tag in doc.get("tags") or []:
            if isinstance(tag, dict) and "name" in tag:
                tags[tag["name"]] = tag
    if tags:
        merged["tags"] = list(tags.values())
    return merged


class RestartsCollector(Collector):
    """`parley_devstack_restarts_total{process}`: how often `parley run` restarted each process,
    read from its run.json at scrape time (the supervisor is another process)."""

    def __init__(self, run_state: Path) -> None:
        self.run_state = run_state

    def collect(self) -> Iterator[CounterMetricFamily]:
        help_text = "Processes restarted by parley run after they died."
        family = CounterMetricFamily("parley_devstack_restarts", help_text, labels=["process"])
        try:
            restarts = json.loads(self.run_state.read_text()).get("restarts") or {}
        except (OSError, ValueError, AttributeError):
            restarts = {}
        for name, count in sorted(restarts.items()):
            if isinstance(count, int):
                family.add_metric([str(name)], count)
        yield family


def build_app(
    settings: EdgeMetaSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    settings = settings or EdgeMetaSettings()
    peers = settings.peers
    client = httpx.AsyncClient(transport=transport, timeout=settings.edge_peer_timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    # Our own /openapi.json and /docs replace FastAPI's: this app documents the platform, not itself.
    app = FastAPI(title="Parley edge", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    app.add_middleware(HeaderLimitMiddleware, limit=settings.max_header_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: Codes.ROUTE_NOT_FOUND, 405: Codes.METHOD_NOT_ALLOWED}.get(
            exc.status_code, Codes.INTERNAL
        )
        return error_response(code)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        states = await asyncio.gather(*(_peer_ready(client, url) for url in peers.values()))
        services = dict(zip(peers, states, strict=True))
        not_ready = [name for name, state in services.items() if state != READY]
        if not_ready:
            body = {"status": "not_ready", "not_ready": not_ready, "services": services}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": READY, "services": services})

    registry = CollectorRegistry()
    if settings.edge_run_state is not None:
        registry.register(RestartsCollector(settings.edge_run_state))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi() -> JSONResponse:
        timeout_s = settings.edge_openapi_timeout_s
        docs = await asyncio.gather(*(_peer_openapi(client, url, timeout_s) for url in peers.values()))
        merged = merge_openapi(
            [d for d in docs if d is not None], title="Parley API", version=settings.api_version
        )
        missing = [name for name, doc in zip(peers, docs, strict=True) if doc is None]
        if missing:
            # Say which services are absent instead of silently serving a partial API.
            merged["info"]["x-parley-unavailable"] = missing
        return JSONResponse(merged)

    add_api_docs(app, openapi_url="/openapi.json", title="Parley API")

    app.add_middleware(PlaygroundHeaders)
    app.mount("/play", StaticFiles(directory=PLAYGROUND, html=True), name="playground")

    errors_page = render_errors_page(settings.edge_errors_doc)

    @app.get("/errors")
    async def errors() -> HTMLResponse:
        return HTMLResponse(errors_page)

    return app


def render_errors_page(path: Path) -> str:
    """docs/errors.md as one HTML page; its `<a id=…>` anchors are what `doc_url` fragments name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = "# Error codes\n\nThe error reference (docs/errors.md) is not installed with this edge."
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    head = "<meta charset='utf-8'><title>Parley errors</title>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def main() -> None:
    from parley_common.kit.runner import serve

    settings = EdgeMetaSettings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
