"""What the app factory's layers cost an HTTP request (`parley_common.http.create_app`): a JSON route
called through every layer as a served process has them (spans recorded, the access line written
to /dev/null), against the same app under two more layers of Starlette's `BaseHTTPMiddleware`
that pass the request on: the form of the factory's version gate and access log before change 91.
In one process, alternated; the ASGI calls are made directly (no server, no socket).

    python -m bench.http_stack [--count 2000] [--rounds 5]

Prints the CPU per request and its ratio, and what does not depend on the machine: the Python
calls and the tasks each request makes. docs/performance.md, "HTTP requests: the app factory's
middlewares as plain ASGI".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog
from starlette.middleware.base import BaseHTTPMiddleware

from parley_common.logging import setup_logging
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_devstack.testing import asgi_get, probe_app


async def passed_on(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    return await call_next(request)


def apps() -> dict[str, Any]:
    settings = CommonSettings(service_name="bench")
    factory = probe_app(settings, http_path="/probe", ws_path="/ws", greeting="hi")
    layered = probe_app(settings, http_path="/probe", ws_path="/ws", greeting="hi")
    for _ in range(2):
        layered.add_middleware(BaseHTTPMiddleware, dispatch=passed_on)
    return {"the factory's layers": factory, "+ 2 BaseHTTPMiddleware": layered}


async def request(app: Any) -> None:
    sent = await asgi_get(app, "/probe", [(b"user-agent", b"bench")])
    assert sent[0]["status"] == 200, sent


async def cpu_us(app: Any, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await request(app)
    return (time.process_time() - started) / count * 1e6


async def made_per_request(app: Any, count: int = 20) -> tuple[float, float]:
    """Python calls and tasks per request."""
    loop = asyncio.get_running_loop()
    tasks = 0

    def counting(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        nonlocal tasks
        tasks += 1
        return asyncio.Task(coro, loop=loop, **kw)

    calls = 0

    def profile(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    sys.setprofile(profile)
    try:
        for _ in range(count):
            await request(app)
    finally:
        sys.setprofile(None)
        loop.set_task_factory(None)
    return calls / count, tasks / count


async def measure(count: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    built = apps()
    for app in built.values():  # each builds its middleware stack on its first request
        await cpu_us(app, 50)
    best = {name: float("inf") for name in built}
    for _ in range(rounds):
        for name, app in built.items():
            best[name] = min(best[name], await cpu_us(app, count))
    made = {name: await made_per_request(app) for name, app in built.items()}
    return {name: (best[name], *made[name]) for name in built}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="requests per round and app")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    setup_telemetry(CommonSettings(service_name="bench"))  # spans recorded, as in a served process
    stderr = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        setup_logging("bench", "INFO", json_output=True)  # the access line, to /dev/null
        try:
            results = asyncio.run(measure(args.count, args.rounds))
        finally:
            sys.stderr = stderr
            structlog.reset_defaults()
    base = next(iter(results.values()))[0]
    print("app                      CPU µs/request  ratio  Python calls  tasks")
    for name, (us, calls, tasks) in results.items():
        print(f"{name:<25}{us:>14.1f}{us / base:>7.2f}{calls:>14.0f}{tasks:>7.1f}")


if __name__ == "__main__":
    main()
