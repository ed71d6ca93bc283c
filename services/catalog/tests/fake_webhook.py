"""A real HTTP server on 127.0.0.1 playing the webhook side of tools (uvicorn, same event loop)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from parley_devstack.servers import free_port

BIG = 2 * 1024 * 1024


class FakeWebhook:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    async def echo(self, request: Request) -> Response:
        self.calls[request.url.path] += 1
        body: Any = None
        raw = await request.body()
        if raw:
            body = await request.json()
        return JSONResponse(
            {
                "method": request.method,
                "query": dict(request.query_params),
                "body": body,
                "headers": {k.lower(): v for k, v in request.headers.items()},
            }
        )

    async def envelope(self, request: Request) -> Response:
        self.calls[request.url.path] += 1
        return JSONResponse(
            {"success": False, "error": "Room is locked", "code": "room.locked", "action": {"type": "unlock"}}
        )

    async def flaky(self, request: Request) -> Response:
        key = f"{request.method} {request.url.path}"
        self.calls[key] += 1
        if request.method == "POST" or self.calls[key] <= 2:
            return JSONResponse({"error": "try later"}, status_code=503)
        return JSONResponse({"attempt": self.calls[key]})

    async def slow(self, request: Request) -> Response:
        self.calls[f"{request.method} {request.url.path}"] += 1
        await asyncio.sleep(3)
        return JSONResponse({"late": True})

    async def big(self, request: Request) -> Response:
        return PlainTextResponse("x" * BIG)

    async def text(self, request: Request) -> Response:
        return PlainTextResponse("plain words")

    async def boom(self, request: Request) -> Response:
        return JSONResponse({"error": "exploded"}, status_code=500)

    async def redirect(self, request: Request) -> Response:
        return RedirectResponse(self.url("/echo"), status_code=302)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                Route("/echo", self.echo, methods=methods),
                Route("/envelope", self.envelope, methods=methods),
                Route("/flaky", self.flaky, methods=methods),
                Route("/slow", self.slow, methods=methods),
                Route("/big", self.big, methods=methods),
                Route("/text", self.text, methods=methods),
                Route("/boom", self.boom, methods=methods),
                Route("/redirect", self.redirect, methods=methods),
            ]
        )


@asynccontextmanager
async def running() -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook()
    config = uvicorn.Config(fake.app(), host="127.0.0.1", port=fake.port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        if task.done() or asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("fake webhook server did not start")
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
