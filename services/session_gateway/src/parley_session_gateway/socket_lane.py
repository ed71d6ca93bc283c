"""The gateway's WebSocket routes straight from the server, past the layers that only serve HTTP.

Every socket's handler ran inside each layer of the app's middleware and routing (Starlette's and
FastAPI's error handling, telemetry and body limits, Parley's access log and client-version gate,
the router and the included routers): 27 awaiting coroutines and their closures, held for as long
as the socket is open, in every one of thousands of held sockets, and walked through at every
opening (docs/performance.md, "Opening a session: the socket's lane past the HTTP layers"). None
of them acts on a WebSocket: the OpenTelemetry middleware leaves sockets out (a turn's trace is
the services' own spans), the body limit, the access log and the version gate are HTTP's, and
the socket routes take no dependencies. The one that does, the header limit, is applied here too.

`LanedApp` is the gateway's FastAPI app with a `SocketLane` in front of all of it: a WebSocket
whose path is one of the lane's routes goes to its endpoint before FastAPI's own call and the
layers it builds around the app (its telemetry and body-limit middleware, Starlette's error
middleware, OpenTelemetry's ASGI middleware: 8 more calls awaiting per socket, ~4 KiB, when the
lane was the outermost middleware inside them); everything else (HTTP, lifespan, other paths) goes
down the app as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from parley_common.http import HeaderLimitMiddleware

Endpoint = Callable[[WebSocket], Awaitable[None]]


def socket_endpoints(routers: Sequence[APIRouter]) -> dict[str, Endpoint]:
    """The WebSocket routes of `routers` with a fixed path, by path."""
    return {
        route.path: route.endpoint
        for router in routers
        for route in router.routes
        if isinstance(route, WebSocketRoute) and not route.param_convertors
    }


class SocketLane:
    def __init__(self, app: ASGIApp, *, routes: Mapping[str, Endpoint], header_limit: int) -> None:
        self.app = app
        self.routes = dict(routes)
        # The HTTP stack's own check and refusal (431 and the envelope), not around the endpoint:
        # a layer around it would be one more coroutine held for the socket's life.
        self.headers = HeaderLimitMiddleware(app, header_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                if self.headers.too_large(scope):
                    await self.headers.refuse(scope, receive, send)
                    return
                await endpoint(WebSocket(scope, receive=receive, send=send))
                return
        await self.app(scope, receive, send)


class LanedApp(FastAPI):
    """A FastAPI app whose lane's WebSockets skip everything FastAPI and Starlette wrap it in."""

    lane: SocketLane | None = None

    def add_socket_lane(self, routes: Mapping[str, Endpoint], *, header_limit: int) -> None:
        # What is not the lane's goes down FastAPI's own call: its layers, then the routes.
        self.lane = SocketLane(super().__call__, routes=routes, header_limit=header_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if lane is not None and scope["type"] == "websocket":
            # What FastAPI and Starlette set before anything else (`websocket.app`).
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
