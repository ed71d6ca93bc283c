"""The merged `/openapi.json` the edge serves, built in process from the real service apps (each
answering its own /openapi.json through an ASGI transport), for the contract tests that compare it
with a published client's spec (test_openapi_contract.py, test_serviceai_contract.py)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from parley_auth.app import build_app as build_auth
from parley_auth.settings import AuthSettings
from parley_catalog.app import build_app as build_catalog
from parley_catalog.settings import CatalogSettings
from parley_devstack.edge_meta import EdgeMetaSettings
from parley_devstack.edge_meta import build_app as build_edge_meta
from parley_runtime.app import build_app as build_runtime
from parley_session_gateway.app import build_app as build_gateway


async def merged_openapi() -> dict[str, Any]:
    """The document edge-meta serves, every peer answering (no `x-parley-unavailable`)."""
    apps = {
        "auth": build_auth(AuthSettings(auth_token_secret=secrets.token_urlsafe(32))),
        "catalog": build_catalog(CatalogSettings(catalog_secret_key=secrets.token_urlsafe(32))),
        "session_gateway": build_gateway(),
        "runtime": build_runtime(),
    }
    transports = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}

    class Peers(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await transports[request.url.host.removesuffix(".test")].handle_async_request(request)

    settings = EdgeMetaSettings(edge_peers=",".join(f"{n}=http://{n}.test" for n in apps))
    edge = build_edge_meta(settings, transport=Peers())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    assert "x-parley-unavailable" not in document["info"]
    return document
