"""The edge's readiness aggregation, merged OpenAPI document and docs, against fake peers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley_devstack.edge_meta import EdgeMetaSettings, build_app, merge_openapi, parse_peers
from parley_devstack.testing import page_urls

Peer = Callable[[httpx.Request], httpx.Response]


def ready(_: httpx.Request) -> httpx.Response:
    if _.url.path == "/readyz":
        return httpx.Response(200, json={"status": "ready", "checks": {"nats": "ok"}})
    return httpx.Response(404)


def not_ready(_: httpx.Request) -> httpx.Response:
    checks = {"nats": "ok", "postgres": "ConnectionRefusedError: [Errno 111] Connect call failed"}
    return httpx.Response(503, json={"status": "not_ready", "checks": checks})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def hangs(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def garbage(_: httpx.Request) -> httpx.Response:
    return httpx.Response(502, text="<html>bad gateway</html>")


def openapi(paths: dict[str, Any], schemas: dict[str, Any]) -> Peer:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(
                200,
                json={
                    "openapi": "3.1.0",
                    "info": {"title": "x", "version": "1"},
                    "paths": paths,
                    "components": {"schemas": schemas},
                    "tags": [{"name": "meta"}],
                },
            )
        return ready(request)

    return handler


def edge(peers: dict[str, Peer]) -> httpx.AsyncClient:
    """The edge app with each peer `name` at http://name.test answered by its handler."""

    def route(request: httpx.Request) -> httpx.Response:
        return peers[request.url.host.removesuffix(".test")](request)

    settings = EdgeMetaSettings(edge_peers=",".join(f"{name}=http://{name}.test" for name in peers))
    app = build_app(settings, transport=httpx.MockTransport(route))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


async def test_ready_when_every_peer_is() -> None:
    async with edge({"auth": ready, "catalog": ready}) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "services": {"auth": "ready", "catalog": "ready"}}


async def test_not_ready_names_each_missing_peer_and_why() -> None:
    peers = {
        "auth": ready,
        "catalog": not_ready,
        "session_gateway": refused,
        "runtime-1": hangs,
        "x": garbage,
    }
    async with edge(peers) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["not_ready"] == ["catalog", "session_gateway", "runtime-1", "x"]
    services = body["services"]
    assert services["auth"] == "ready"
    assert services["catalog"].startswith("postgres: ConnectionRefusedError")
    assert "nats" not in services["catalog"]  # only the failing checks
    assert services["session_gateway"] == "unreachable (ConnectError)"
    assert services["runtime-1"] == "timeout"
    assert services["x"] == "HTTP 502"


async def test_peers_are_polled_concurrently() -> None:
    """A slow peer costs its own timeout once, not once per peer."""
    import asyncio
    import time

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.3)
            return httpx.Response(200, json={"status": "ready"})

    settings = EdgeMetaSettings(edge_peers=",".join(f"p{i}=http://p{i}.test" for i in range(5)))
    app = build_app(settings, transport=Slow())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 1.2  # five sequential calls would take 1.5 s


async def test_no_peers_is_ready() -> None:
    async with edge({}) as client:
        assert (await client.get("/readyz")).json() == {"status": "ready", "services": {}}


async def test_openapi_merges_peers_and_skips_those_down() -> None:
    auth = openapi(
        {"/auth/sessions": {"post": {"summary": "login"}}, "/version": {"get": {"summary": "auth's"}}},
        {"Error": {"title": "auth Error"}, "User": {"type": "object"}},
    )
    catalog = openapi(
        {"/agents": {"get": {"summary": "list"}}, "/version": {"get": {"summary": "catalog's"}}},
        {"Error": {"title": "catalog Error"}, "Agent": {"type": "object"}},
    )
    async with edge({"auth": auth, "catalog": catalog, "session_gateway": refused}) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Parley API"
    assert set(doc["paths"]) == {"/auth/sessions", "/version", "/agents"}
    assert doc["paths"]["/version"]["get"]["summary"] == "catalog's"  # later peers win
    assert set(doc["components"]["schemas"]) == {"Error", "User", "Agent"}
    assert doc["components"]["schemas"]["Error"]["title"] == "catalog Error"
    assert doc["tags"] == [{"name": "meta"}]
    assert doc["info"]["x-parley-unavailable"] == ["session_gateway"]


async def test_openapi_waits_longer_for_a_peer_than_readiness_does() -> None:
    """A service makes its OpenAPI document on the first request, slowly on a busy machine: the
    merged document waits `edge_openapi_timeout_s` for it, readiness only `edge_peer_timeout_s`."""
    import asyncio

    class Slow(httpx.AsyncBaseTransport):  # times out as httpcore does, on the request's budget
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            delay = 0.3
            if delay > request.extensions["timeout"]["read"]:
                raise httpx.ReadTimeout("timed out", request=request)
            await asyncio.sleep(delay)
            return openapi({"/agents": {"get": {"summary": "list"}}}, {})(request)

    settings = EdgeMetaSettings(
        edge_peers="catalog=http://catalog.test", edge_peer_timeout_s=0.1, edge_openapi_timeout_s=2.0
    )
    app = build_app(settings, transport=Slow())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        assert (await client.get("/readyz")).json()["services"] == {"catalog": "timeout"}
        doc = (await client.get("/openapi.json")).json()
    assert "x-parley-unavailable" not in doc["info"]
    assert set(doc["paths"]) == {"/agents"}


def test_merge_keeps_every_component_section() -> None:
    merged = merge_openapi(
        [
            {"paths": {}, "components": {"securitySchemes": {"cookie": {"type": "apiKey"}}}},
            {
                "paths": {},
                "components": {"schemas": {"A": {}}, "securitySchemes": {"bearer": {"type": "http"}}},
            },
        ],
        title="t",
        version="1",
    )
    assert merged["components"] == {
        "securitySchemes": {"cookie": {"type": "apiKey"}, "bearer": {"type": "http"}},
        "schemas": {"A": {}},
    }


async def test_docs_page_points_at_the_merged_document() -> None:
    async with edge({}) as client:
        response = await client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text


async def test_docs_load_nothing_from_another_origin() -> None:
    """Offline or air-gapped, /docs must still work: every URL of the page is same-origin, and
    each one answers (Swagger UI's bundle and stylesheet come from the installation)."""
    async with edge({"auth": openapi({}, {})}) as client:
        page = (await client.get("/docs")).text
        urls = page_urls(page)
        assert {u.rsplit("/", 1)[-1] for u in urls} >= {
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "favicon.png",
            "openapi.json",
        }
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            response = await client.get(url)
            assert response.status_code == 200, url
            assert len(response.content) > 100, url
    assert "cdn" not in page.lower() and "http" not in page.replace("http-equiv", "")


async def test_the_playground_is_served_whole_and_same_origin_only() -> None:
    """/play is the playground: every module and stylesheet it loads is served here (no build step,
    no CDN), each import of a module names a file that exists, and the page forbids anything else."""
    async with edge({}) as client:
        assert (await client.get("/play")).status_code in (307, 308)
        page = await client.get("/play/")
        assert page.status_code == 200 and "Parley playground" in page.text
        policy = page.headers["content-security-policy"]
        assert (
            "default-src 'none'" in policy
            and "connect-src 'self'" in policy
            and "frame-ancestors 'none'" in policy
        )
        assert page.headers["x-content-type-options"] == "nosniff"
        sources = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
        assert sorted(sources) == ["./app.js", "./playground.css"]
        scripts = ["app.js"]
        while scripts:
            name = scripts.pop()
            body = await client.get(f"/play/{name}")
            assert body.status_code == 200 and "javascript" in body.headers["content-type"], name
            assert "http://" not in body.text and "https://" not in body.text, name
            scripts += re.findall(r'from "\./([a-z]+\.js)"', body.text)
        assert (await client.get("/play/playground.css")).headers["content-type"].startswith("text/css")
        missing = await client.get("/play/nothing.js")
        assert missing.status_code == 404 and missing.json()["code"] == "request.route_not_found"


async def test_unknown_paths_get_the_error_envelope() -> None:
    async with edge({}) as client:
        response = await client.get("/nope")
        wrong_method = await client.post("/readyz")
    assert response.status_code == 404
    assert response.json()["code"] == "request.route_not_found"
    assert {"code", "message", "doc_url"} <= set(response.json())
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "request.method_not_allowed"


def test_peers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_EDGE_PEERS", "auth=http://127.0.0.1:1, catalog=http://127.0.0.1:2/ ")
    monkeypatch.setenv("PARLEY_HTTP_PORT", "4567")
    settings = EdgeMetaSettings()
    assert settings.peers == {"auth": "http://127.0.0.1:1", "catalog": "http://127.0.0.1:2"}
    assert settings.http_port == 4567


@pytest.mark.parametrize("spec", ["auth", "auth=", "=http://x", "auth=ftp://x"])
def test_malformed_peers_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_peers(spec)


def test_errors_page_has_an_anchor_for_every_code(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from parley_common.errors import REGISTRY
    from parley_devstack.edge_meta import EdgeMetaSettings, build_app

    doc = Path(__file__).resolve().parents[3] / "docs" / "errors.md"
    app = build_app(EdgeMetaSettings(edge_peers="", edge_errors_doc=doc))
    with TestClient(app) as client:
        page = client.get("/errors")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for code in REGISTRY.values():
        assert f'id="{code.anchor}"' in page.text, code.code


async def test_metrics_serve_the_restart_counts_of_parley_run(tmp_path: Path) -> None:
    state = tmp_path / "run.json"
    settings = EdgeMetaSettings(edge_peers="", edge_run_state=state)
    transport = httpx.ASGITransport(app=build_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        empty = await client.get("/metrics")  # no run.json yet: no samples, not an error
        assert empty.status_code == 200 and "parley_devstack_restarts_total{" not in empty.text
        state.write_text(json.dumps({"restarts": {"runtime-1": 2, "catalog": 0}}))
        text = (await client.get("/metrics")).text
    assert 'parley_devstack_restarts_total{process="runtime-1"} 2.0' in text
    assert 'parley_devstack_restarts_total{process="catalog"} 0.0' in text
    assert "# TYPE parley_devstack_restarts_total counter" in text
