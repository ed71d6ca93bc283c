"""The app factory's own middlewares (`parley_common.http`) are plain ASGI.

A response leaves the stack as the route made it: its body is its last message. Starlette's
`BaseHTTPMiddleware` ended every response with an empty message of its own after a wait, while the
client already had every byte; the edge's next request on the connection then came in first, and
uvicorn started it from inside the earlier request's task. The access log still counts and times
every request, a request that raised as the 500 its client gets.
"""

from __future__ import annotations

import ast
from typing import Any

from fastapi import APIRouter

from parley_common import metrics
from parley_common.http import create_app
from parley_common.settings import CommonSettings
from parley_devstack.testing import asgi_get


def app_with(router: APIRouter) -> Any:
    settings = CommonSettings(service_name="probe", min_client_version="2.0.0")
    return create_app(settings, title="probe", routers=[router])


def counted(route: str, status: str) -> float:
    value = metrics.HTTP_REQUESTS.labels("probe", "GET", route, status)._value.get()
    return float(value)


async def test_a_response_ends_with_its_own_body() -> None:
    router = APIRouter()

    @router.get("/answer")
    async def answer() -> dict[str, bool]:
        return {"ok": True}

    before = counted("/answer", "200")
    sent = await asgi_get(app_with(router), "/answer")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b'{"ok":true}' and not sent[1].get("more_body", False)
    assert counted("/answer", "200") == before + 1


async def test_the_version_gate_answers_before_the_route() -> None:
    router = APIRouter()

    @router.get("/gated")
    async def gated() -> dict[str, bool]:
        raise AssertionError("an old client reached the route")

    sent = await asgi_get(app_with(router), "/gated", [(b"x-client-version", b"1.4.0")])
    assert sent[0]["status"] == 426 and [m["type"] for m in sent][1:] == ["http.response.body"]
    sent = await asgi_get(app_with(router), "/gated", [(b"x-client-version", b"not a version")])
    assert sent[0]["status"] == 422 and b"X-Client-Version" in sent[1]["body"]


async def test_a_request_that_raised_is_counted_as_the_500_its_client_gets() -> None:
    router = APIRouter()

    @router.get("/broken")
    async def broken() -> dict[str, bool]:
        raise RuntimeError("a bug")

    before = counted("/broken", "500")
    sent = await asgi_get(app_with(router), "/broken")
    assert sent[0]["status"] == 500
    assert counted("/broken", "500") == before + 1


def test_no_served_app_uses_base_http_middleware(app_sources: list[tuple[str, ast.Module]]) -> None:
    """Every app's middlewares are plain ASGI: no `@app.middleware("http")`, no `BaseHTTPMiddleware`."""
    found = []
    for path, tree in app_sources:
        for node in ast.walk(tree):
            named = (isinstance(node, ast.Name) and node.id == "BaseHTTPMiddleware") or (
                isinstance(node, ast.alias) and node.name.endswith("BaseHTTPMiddleware")
            )
            decorated = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "middleware"
                and any(isinstance(a, ast.Constant) and a.value == "http" for a in node.args)
            )
            if named or decorated:
                found.append(f"{path}:{getattr(node, 'lineno', '?')}")
    assert found == []
