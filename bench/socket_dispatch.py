"""What the gateway spends handing a WebSocket from the server to its route, and how deep the
route then runs: through every layer of a service's app (`create_app`'s middleware, FastAPI's,
the router), against a `SocketLane` as the outermost middleware (the gateway's until change 73)
and against the gateway's `LanedApp`, whose lane is in front of FastAPI's own call, in one process.

    python -m bench.socket_dispatch [--count 5000] [--rounds 5]

Each dispatch is one ASGI call of a WebSocket `scope` for `/realtime` whose route returns at
once: the cost an opening pays before the gateway's own work begins. Also printed: the calls
awaiting above the route while it runs (coroutines a held socket keeps suspended for its life).
See docs/performance.md, "Opening a session: the socket's lane past the HTTP layers", and the
sixteenth round.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket

from bench.client_loop import run_client
from parley_common.http import create_app
from parley_common.settings import CommonSettings
from parley_session_gateway.socket_lane import LanedApp, SocketLane, socket_endpoints

HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
    (b"x-forwarded-for", b"127.0.0.1"),
]


def socket_app(*, lane: str, depths: list[int]) -> FastAPI:
    """A service's app with one socket route, `/realtime`, that notes how deep it runs and returns;
    `lane`: "" (none), "middleware" (a `SocketLane` added last) or "front" (a `LanedApp`)."""
    router = APIRouter()

    async def endpoint(_: WebSocket) -> None:
        depths.append(_awaiting_depth())

    router.add_websocket_route("/realtime", endpoint)
    routes, limit = socket_endpoints([router]), 32 * 1024
    app = create_app(CommonSettings(), title="bench", routers=[router], app_class=LanedApp)
    assert isinstance(app, LanedApp)
    if lane == "middleware":
        app.add_middleware(SocketLane, routes=routes, header_limit=limit)
    elif lane == "front":
        app.add_socket_lane(routes, header_limit=limit)
    return app


def _awaiting_depth() -> int:
    """Frames between the bench's call of the app and the route (the route's caller's up)."""
    frame, depth = sys._getframe(1), 0
    while frame is not None and frame.f_code is not dispatch_us.__code__:
        depth += 1
        frame = frame.f_back
    return depth


async def dispatch_us(app: FastAPI, count: int) -> float:
    """CPU µs per WebSocket scope handed to `app` and answered by its route."""

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(_: Any) -> None:
        return None

    scope = {
        "type": "websocket", "path": "/realtime", "raw_path": b"/realtime", "root_path": "",
        "query_string": b"token=x", "headers": HEADERS, "scheme": "ws", "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 5555), "asgi": {"version": "3.0"}, "subprotocols": [],
        "extensions": {"websocket.http.response": {}}, "state": {},
    }  # fmt: skip
    for _ in range(100):  # warm: the middleware stack is built at the first call
        await app(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / count * 1e6


async def measure(count: int, rounds: int) -> dict[str, tuple[float, int]]:
    """Per path: (best CPU µs per dispatch over `rounds`, calls awaiting above the route)."""
    out: dict[str, tuple[float, int]] = {}
    apps: dict[str, tuple[FastAPI, list[int]]] = {}
    for name, lane in (("through the layers", ""), ("SocketLane", "middleware"), ("LanedApp", "front")):
        depths: list[int] = []
        apps[name] = (socket_app(lane=lane, depths=depths), depths)
    best = {name: float("inf") for name in apps}
    for _ in range(rounds):  # alternated, so both see the same machine
        for name, (app, _) in apps.items():
            best[name] = min(best[name], await dispatch_us(app, count))
    for name, (_, depths) in apps.items():
        out[name] = (best[name], depths[-1])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.socket_dispatch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=5000, help="dispatches per round and path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    figures = run_client(measure(args.count, args.rounds))
    base = figures["through the layers"][0]
    print("path                  CPU µs/dispatch  ratio  calls awaiting above the route")
    for name, (us, depth) in figures.items():
        print(f"{name:<22}{us:>15.1f}{us / base:>7.2f}{depth:>31}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
