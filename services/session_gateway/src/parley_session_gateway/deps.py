"""FastAPI dependencies of the gateway's routes (HTTP and WebSocket alike)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from parley_common.ratelimit import RateLimiter
from parley_session_gateway.sessions import GatewayContext


def gateway(conn: HTTPConnection) -> GatewayContext:
    """The gateway's context (`app.state.realtime`, set by `build_app`)."""
    ctx: GatewayContext = conn.app.state.realtime
    return ctx


def voice_limiter(conn: HTTPConnection) -> RateLimiter:
    """The Redis rate limiter of the voice-session routes (`app.state.voice_limiter`)."""
    limiter: RateLimiter = conn.app.state.voice_limiter
    return limiter


Gateway = Annotated[GatewayContext, Depends(gateway)]
