"""HTTP: the agent-sessions API of @octavus/server-sdk 2.0.0, relayed to the runtime workers.

Sessions live in the runtime (Redis state, one execution at a time); this router checks the API
key, forwards each call over the bus and, for triggers, relays the worker's stream frames as
`data: {json}` SSE lines ending with `data: [DONE]`. Errors carry the `Error` envelope plus
`error` (the key the Octavus SDKs read). See docs/octavus-sessions.md.

A trigger's stream is registered in the gateway's `LiveConnections` while it runs: revoking its
API key ends it at once with an `error` event `auth.credential_revoked` and `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from parley_common import subjects
from parley_common.auth_contract import Principal
from parley_common.authenticator import credential_of
from parley_common.errors import Codes, ErrorCode, ParleyError, reply_error
from parley_common.octavus import events as ev
from parley_common.octavus import sessions as wire
from parley_common.octavus.routes import OctavusRoute, api_key
from parley_session_gateway import bus
from parley_session_gateway.deps import Gateway as Ctx
from parley_session_gateway.live import Live, LiveConnections
from parley_session_gateway.sessions import GatewayContext

log = structlog.get_logger(__name__)


def _operation_id(route: APIRoute) -> str:
    """Each route's OpenAPI operation id: `octavus` and its endpoint's name in camel case
    (`create_session` → `octavusCreateSession`)."""
    return "octavus" + "".join(word.capitalize() for word in route.name.split("_"))


router = APIRouter(
    prefix="/api/agent-sessions",
    tags=["octavus"],
    route_class=OctavusRoute,
    generate_unique_id_function=_operation_id,
)
SCOPE = "sessions:write"

SessionId = Annotated[str, Path(min_length=1, max_length=wire.MAX_ID, description="The session's id.")]


Key = Annotated[Principal, Depends(api_key(SCOPE))]


# A worker may first load the session, fetch the agent from the catalog and build the reply.
MIN_TIMEOUT_S = 10.0


async def _ask(ctx: GatewayContext, subject: str, payload: BaseModel) -> wire.OctavusReply:
    timeout = max(ctx.settings.bus_request_timeout_s, MIN_TIMEOUT_S)
    reply = await bus.octavus(ctx.broker, subject, payload, timeout_s=timeout)
    if not reply.ok:
        raise reply_error(reply.error, Codes.INTERNAL)
    return reply


def _json(reply: wire.OctavusReply) -> Response:
    return Response(content=reply.body or "{}", status_code=reply.status, media_type="application/json")


@router.post(
    "",
    response_model=wire.SessionCreated,
    summary="Create an agent session (`agentSessions.create(agentId, input)`)",
    description="`input` is checked against the protocol's `input:`; 400 `octavus.invalid_input` names "
    "the first problem. The agent must be an interactive protocol agent of the API key's project.",
)
async def create_session(body: wire.CreateSessionBody, ctx: Ctx, principal: Key) -> Response:
    return _json(
        await _ask(
            ctx, subjects.OCTAVUS_SESSION_CREATE, wire.OctavusCreateRequest(principal=principal, body=body)
        )
    )


@router.get(
    "/{session_id}",
    response_model=wire.SessionState | wire.UISessionState | wire.ExpiredSession,
    summary="Session state: internal messages, or UI messages with `?format=ui`",
    description='An expired session answers `{sessionId, agentId, status: "expired", createdAt}` '
    "(both formats); restore it to go on.",
)
async def get_session(
    session_id: SessionId,
    ctx: Ctx,
    principal: Key,
    format: Annotated[Literal["ui"] | None, Query(description="`ui`: UI messages with typed parts.")] = None,
) -> Response:
    req = wire.OctavusGetRequest(principal=principal, session_id=session_id, format=format or "internal")
    return _json(await _ask(ctx, subjects.OCTAVUS_SESSION_GET, req))


@router.post(
    "/{session_id}/restore",
    response_model=wire.SessionRestored,
    summary="Restore an expired session from the UI messages the app kept (`restored: false` if active)",
)
async def restore_session(
    session_id: SessionId, body: wire.RestoreSessionBody, ctx: Ctx, principal: Key
) -> Response:
    req = wire.OctavusRestoreRequest(principal=principal, session_id=session_id, body=body)
    return _json(await _ask(ctx, subjects.OCTAVUS_SESSION_RESTORE, req))


@router.post(
    "/{session_id}/trigger",
    summary="Run a trigger, or continue a paused execution with `toolResults`; streams SSE events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`data: {event}` lines, then `data: [DONE]`.",
        }
    },
)
async def trigger_session(
    session_id: SessionId, body: ev.TriggerBody, ctx: Ctx, principal: Key, request: Request
) -> StreamingResponse:
    inbox, sub = await bus.octavus_stream(ctx.broker.connection)  # before asking: it may send at once
    try:
        req = wire.OctavusTriggerRequest(principal=principal, session_id=session_id, body=body, stream=inbox)
        await _ask(ctx, subjects.OCTAVUS_SESSION_TRIGGER, req)
    except BaseException:
        await sub.unsubscribe()
        raise
    # Revoking the key ends the stream (the execution already running finishes on its worker).
    found = credential_of(request, None)  # the bearer key the authenticator just verified
    assert found is not None
    stream = _Revocable(ctx.live, principal, found[0])
    return StreamingResponse(
        _relay(sub, ctx.settings.gateway_octavus_stream_idle_s, session_id, stream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Revocable:
    """A stream's registration in `LiveConnections`, made when the stream starts."""

    def __init__(self, live: LiveConnections, principal: Principal, credential: str) -> None:
        self.connections, self.principal, self.credential = live, principal, credential
        self.revoked: asyncio.Future[ErrorCode] | None = None
        self.entry: Live | None = None

    def start(self) -> None:
        self.revoked = asyncio.get_running_loop().create_future()
        self.entry = self.connections.add("octavus", self.principal, self.credential, self._close)

    def _close(self, code: ErrorCode) -> None:
        if self.revoked is not None and not self.revoked.done():
            self.revoked.set_result(code)

    def stop(self) -> None:
        if self.entry is not None:
            self.connections.remove(self.entry)


async def _next(sub: Subscription, idle_s: float, stream: _Revocable) -> Msg | ErrorCode:
    """The next frame, or the code the stream was revoked with (whichever comes first)."""
    assert stream.revoked is not None
    if stream.revoked.done():
        return stream.revoked.result()
    getter = asyncio.ensure_future(sub.next_msg(timeout=idle_s))
    waits: set[asyncio.Future[Any]] = {getter, stream.revoked}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if stream.revoked.done():
        getter.cancel()
        return stream.revoked.result()
    return getter.result()


async def _relay(sub: Subscription, idle_s: float, session_id: str, stream: _Revocable) -> AsyncIterator[str]:
    """Frames → SSE lines, in order; a silent or gapped stream ends with `octavus.stream_lost`, a
    revoked key with `auth.credential_revoked`."""
    expected = 0
    stream.start()
    try:
        while True:
            try:
                msg = await _next(sub, idle_s, stream)
            except (TimeoutError, NatsTimeoutError):
                yield _lost(session_id, "no frame within the idle timeout")
                break
            if isinstance(msg, ErrorCode):
                yield _revoked(session_id, msg)
                break
            try:
                frame = wire.StreamFrame.model_validate_json(msg.data)
            except ValidationError:
                log.warning("octavus.bad_frame", session_id=session_id)
                continue
            if frame.seq < 0:  # keepalive
                yield ": keepalive\n\n"
                continue
            if frame.seq != expected:
                yield _lost(session_id, f"frame {expected} missing (got {frame.seq})")
                break
            expected += 1
            if frame.done:
                break
            if frame.event is not None:
                yield f"data: {json.dumps(frame.event, separators=(',', ':'))}\n\n"
        yield ev.SSE_DONE
    finally:
        stream.stop()
        await sub.unsubscribe()


def _revoked(session_id: str, code: ErrorCode) -> str:
    log.info("octavus.stream_revoked", session_id=session_id, code=code.code)
    err = ParleyError(code)
    return ev.sse(
        ev.ErrorEvent(error_type="authentication_error", message=err.message, retryable=False, code=code.code)
    )


def _lost(session_id: str, why: str) -> str:
    log.warning("octavus.stream_lost", session_id=session_id, why=why)
    err = ParleyError(Codes.OCTAVUS_STREAM_LOST)
    return ev.sse(
        ev.ErrorEvent(error_type="internal_error", message=err.message, retryable=True, code=err.code.code)
    )
