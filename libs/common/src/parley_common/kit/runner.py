"""Process entry point shared by every HTTP-serving service: logging, tracing, uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from parley_common.logging import setup_logging
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry

S = TypeVar("S", bound=CommonSettings)


def serve(app: FastAPI, settings: CommonSettings) -> None:
    """Run `app` until SIGINT/SIGTERM; uvicorn drains in-flight requests before exiting."""
    setup_logging(settings.service_name, settings.log_level, settings.log_json)
    setup_telemetry(settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        # Frames are small JSON events: compressing each costs CPU on both ends and saves little.
        ws_per_message_deflate=False,
    )


def run(build_app: Callable[[S], FastAPI], get_settings: Callable[[], S]) -> None:
    """`python -m <service>`: read the settings, build the app with them, serve it."""
    settings = get_settings()
    serve(build_app(settings), settings)
