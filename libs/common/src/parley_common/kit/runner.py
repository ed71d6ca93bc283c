"""Process entry point shared by every HTTP-serving service: logging, tracing, uvicorn."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import uvicorn
from fastapi import FastAPI

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


def serve(app: FastAPI, settings: CommonSettings, ws: type[asyncio.Protocol] | str = "auto") -> None:
    """Run `app` until SIGINT/SIGTERM; uvicorn drains in-flight requests before exiting. `ws`:
    uvicorn's WebSocket protocol (the gateway's writes a loop turn's frames together)."""
    setup_logging(settings.service_name, settings.log_level, settings.log_json)
    setup_telemetry(settings)
    uvicorn.run(
        freeze_after_startup(app, settings.gc_thresholds),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        # Frames are small JSON events: compressing each costs CPU on both ends and saves little.
        ws_per_message_deflate=False,
        ws=ws,
    )


def run(
    build_app: Callable[[S], FastAPI],
    get_settings: Callable[[], S],
    ws: type[asyncio.Protocol] | str = "auto",
) -> None:
    """`python -m <service>`: read the settings, build the app with them, serve it."""
    settings = get_settings()
    serve(build_app(settings), settings, ws)
