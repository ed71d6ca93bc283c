"""FastAPI dependencies of the gateway's routes (HTTP and WebSocket alike)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query
from starlette.requests import HTTPConnection

from parley_common.ratelimit import RateLimiter
from parley_session_gateway.resume import Resume
from parley_session_gateway.sessions import GatewayContext


def gateway(conn: HTTPConnection) -> GatewayContext:
    """The gateway's context (`app.state.realtime`, set by `build_app`)."""
    ctx: GatewayContext = conn.app.state.realtime
    return ctx


def voice_limiter(conn: HTTPConnection) -> RateLimiter:
    """The Redis rate limiter of the voice-session routes (`app.state.voice_limiter`)."""
    limiter: RateLimiter = conn.app.state.voice_limiter
    return limiter


async def _gateway(conn: HTTPConnection) -> GatewayContext:
    """`gateway` as a dependency. A coroutine: FastAPI runs a plain function's dependency in its
    thread pool, a hop to a worker thread and back for every socket opened."""
    return gateway(conn)


Gateway = Annotated[GatewayContext, Depends(_gateway)]


def resume_from(param: str) -> Callable[..., Awaitable[Resume | None]]:
    """A socket's resume request: the conversation in query parameter `param` (`resume` on
    `/realtime`, `session_id` on `/chat/ws`) and `last_event`; None without one. (A coroutine, as
    `Gateway`'s is, so it runs in the event loop.)"""

    async def resume(
        conversation_id: str | None = Query(default=None, alias=param, max_length=64),
        last_event: int = Query(default=0, ge=0),
    ) -> Resume | None:
        return Resume(conversation_id=conversation_id, last_event=last_event) if conversation_id else None

    return resume
