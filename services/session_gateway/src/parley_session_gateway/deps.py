"""FastAPI dependencies of the gateway's HTTP routes, and what its socket routes read by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends
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
    thread pool, a hop to a worker thread and back for every request."""
    return gateway(conn)


Gateway = Annotated[GatewayContext, Depends(_gateway)]


class BadResumeQuery(ValueError):
    """A socket's resume query parameters that do not parse (the socket is refused before it is
    accepted, as FastAPI refuses a failed query parameter: close 1008)."""


MAX_RESUME_ID = 64  # characters of a resume query's conversation id


def resume_of(params: Mapping[str, str], param: str) -> Resume | None:
    """A socket's resume request: the conversation in query parameter `param` (`resume` on
    `/realtime`, `session_id` on `/chat/ws`) and `last_event` (an integer ≥ 0, 0 when absent);
    None without a conversation. Read here, not by FastAPI's dependency machinery: solving a
    socket route's dependencies cost ~90 µs of the gateway's CPU per socket opened."""
    conversation_id = params.get(param) or None
    if conversation_id is not None and len(conversation_id) > MAX_RESUME_ID:
        raise BadResumeQuery(f"{param}: at most {MAX_RESUME_ID} characters")
    raw = params.get("last_event")
    last_event = 0
    if raw is not None:
        try:
            last_event = int(raw.strip())
        except ValueError:
            raise BadResumeQuery("last_event: an integer") from None
        if last_event < 0:
            raise BadResumeQuery("last_event: at least 0")
    return Resume(conversation_id=conversation_id, last_event=last_event) if conversation_id else None
