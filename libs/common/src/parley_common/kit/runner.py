"""Process entry point shared by every HTTP-serving service: logging, tracing, uvicorn."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from types import FrameType
from typing import Any, TypeVar, cast

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from parley_common.logging import setup_logging
from parley_common.metrics import observe_gc
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry

S = TypeVar("S", bound=CommonSettings)


def freeze_after_startup(app: FastAPI, thresholds: tuple[int, int, int] | None = None) -> FastAPI:
    """Once `app`'s lifespan has started, move everything alive to the collector's permanent
    generation (`gc.freeze()`, after a collection), then collect with `thresholds`
    (`CommonSettings.gc_thresholds`; None: leave them) and count the collector's time
    (`parley_gc_seconds_total`).

    What a service builds to start (its modules, the app and its routes, pydantic's schemas, the
    broker, the pools) lives as long as the process, yet every full collection walked all of it:
    with a few hundred sockets opening, the gateway's full collections took ~130 ms each and a
    quarter of its CPU. Frozen, they walk only what came after (the sessions). Only for a served
    process (`serve`): a test that starts many apps in one process would keep each one's objects."""
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with started(the_app) as state:
            gc.collect()
            gc.freeze()
            if thresholds is not None:
                gc.set_threshold(*thresholds)
            observe_gc()
            yield state

    app.router.lifespan_context = cast(Any, lifespan)  # a state, if the app's lifespan yields one, passed on
    return app


class QuietServer(uvicorn.Server):
    """uvicorn's server, waking once a second instead of ten times to look at its exit flag and to
    refresh its `Date` header (`main_loop`): ~1.2 ms of CPU a second per idle process on the
    machines of docs/performance.md, in every process of the stack. A signal to stop wakes it at
    once, so it stops as soon as uvicorn's own."""

    TICK_S = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        # `on_tick` refreshes the Date header when the counter is a multiple of ten (a second of
        # uvicorn's 0.1 s ticks): every tick here is a second.
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as the wake-up does.
            with suppress(TimeoutError):
                async with asyncio.timeout(self.TICK_S):
                    await self._woken.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._woken is not None:
            self._loop.call_soon_threadsafe(self._woken.set)  # from a signal handler: through the loop


def server_config(
    app: FastAPI, settings: CommonSettings, ws: type[asyncio.Protocol] | str = "auto"
) -> uvicorn.Config:
    """uvicorn's settings for a served process (`serve`)."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        backlog=settings.listen_backlog,
        timeout_graceful_shutdown=10,
        # Frames are small JSON events: compressing each costs CPU on both ends and saves little.
        ws_per_message_deflate=False,
        ws=ws,
        # Each request starts from an empty context. A request that arrives on a connection
        # before uvicorn has finished the one before it is started from inside that one's task,
        # with its context: OpenTelemetry then made the second request's span a child of the
        # first (uvicorn#3158), and its trace went missing from every trace list. Nothing of
        # the process's start is lost: `setup_logging` adds the service name to every line
        # itself, and no other context variable is set before a request.
        reset_contextvars=True,
    )


def serve(app: FastAPI, settings: CommonSettings, ws: type[asyncio.Protocol] | str = "auto") -> None:
    """Run `app` until SIGINT/SIGTERM; uvicorn drains in-flight requests before exiting. `ws`:
    uvicorn's WebSocket protocol (the gateway's writes a loop turn's frames together)."""
    setup_logging(settings.service_name, settings.log_level, settings.log_json)
    setup_telemetry(settings)
    server = QuietServer(server_config(freeze_after_startup(app, settings.gc_thresholds), settings, ws))
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as `uvicorn.run`: a failed startup is the process's failure
        sys.exit(STARTUP_FAILURE)


def run(
    build_app: Callable[[S], FastAPI],
    get_settings: Callable[[], S],
    ws: type[asyncio.Protocol] | str = "auto",
) -> None:
    """`python -m <service>`: read the settings, build the app with them, serve it."""
    settings = get_settings()
    serve(build_app(settings), settings, ws)
