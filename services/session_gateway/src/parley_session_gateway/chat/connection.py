"""One `/chat/ws` connection: a chat client token, text in, streamed responses out.

Admission is the Kivox path's (`admit`: auth verifies the token, the catalog answers
`catalog.agent.access`) with the agent taken from the token; the session starts the same way
(`open_session`), so the runtime serves both protocols alike. Besides mapping frames the connection
sends a `heartbeat` every `gateway_chat_heartbeat_s`, and keeps its own token expiry: refreshes
move it, and a connection whose token expires without one is closed.

Resumption (`?session_id=…&last_event=…`): the frames made from the session's output (responses,
the runtime's errors, `session-closed`) are numbered with `seq` (1, 2, … per session). They are a
function of the session's output stream alone, which a connection always reads from its start, so
a resumed connection numbers them exactly as the first one did and sends only those after
`last_event`: no gap, no duplicate.

Revocation: while open, the connection is registered in the gateway's `LiveConnections` with its
current token (a refresh replaces it). When auth revokes that token (or the API key that minted
it, or the account), the session ends (`user_exit`) and the socket closes with 4401
`auth.credential_revoked` (docs/chat-ws.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from opentelemetry import trace
from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from parley_common import metrics
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes, ErrorCode, ParleyError, envelope
from parley_common.outages import describe, is_outage
from parley_common.session_contract import (
    ClientConnected,
    ClientDisconnected,
    InputEnd,
    InputText,
    ServerError,
    ServerSessionClosed,
    ServerTextDelta,
    ServerTextFull,
    ServerTurnComplete,
    SessionControl,
    SessionOutput,
)
from parley_session_gateway.chat.frames import (
    ChatFrameError,
    ChatMessage,
    ChatTokenRefresh,
    Connected,
    Heartbeat,
    MessageAck,
    MessageError,
    ResponseChunk,
    ResponseEnd,
    ResponseStart,
    SessionClosed,
    SessionFrame,
    TokenExpired,
    TokenRefreshAck,
    TokenRefreshError,
    TokenRefreshRequired,
    check_artifacts,
    parse_chat_frame,
    with_artifacts,
)
from parley_session_gateway.chat.resume import ChatResume, find_chat, remember_chat, touch_chat
from parley_session_gateway.live import Live
from parley_session_gateway.realtime.access import Admission, Refused, admit, same_agent, touch
from parley_session_gateway.realtime.bridge import SessionBridge
from parley_session_gateway.realtime.ratelimit import TokenBucket
from parley_session_gateway.sessions import GatewayContext, open_session

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.session_gateway")

CLOSE_UNAUTHORIZED = CloseCodes.UNAUTHORIZED  # refused at connect, the token expired or was revoked
CLOSE_NOT_FOUND = CloseCodes.NOT_FOUND  # a resume of a session this token may not resume (or none)
CLOSE_SUPERSEDED = CloseCodes.SUPERSEDED  # another connection resumed the session
CLOSE_UNAVAILABLE = CloseCodes.UNAVAILABLE
CLOSE_TRY_AGAIN = CloseCodes.TRY_AGAIN  # busy, or Redis / the bus is away: connect again shortly

_STATUS: dict[ConversationEndReason, Literal["completed", "timeout", "failed"]] = {
    ConversationEndReason.TIMEOUT: "timeout",
    ConversationEndReason.ERROR: "failed",
}


def _chat_token(principal: Principal) -> bool:
    return principal.kind is CredentialKind.CLIENT_TOKEN and principal.token_type == "chat"


def same_scope(a: Principal, b: Principal) -> bool:
    """Refresh tokens must name the same agent, organization and environment."""
    return same_agent(a.agent_id, b.agent_id) and a.org_id == b.org_id and a.env == b.env


class ChatConnection:
    def __init__(self, ctx: GatewayContext, ws: WebSocket, resume: ChatResume | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.ws = ws
        self.resume = resume
        self.connection_id = uuid.uuid4().hex
        self.bridge: SessionBridge | None = None
        self.bucket = TokenBucket(self.settings.gateway_input_rate_per_s, self.settings.gateway_input_burst)
        self.principal: Principal | None = None
        self.expires_at = datetime.now(UTC)  # the current token's `exp` (moved by refreshes)
        self.started_at = datetime.now(UTC)
        self.turn: list[str] | None = None  # text of the response being streamed
        self.seq = 0  # session frames made so far (sent, or skipped as seen before a resume)
        self.seen = resume.last_event if resume else 0
        self.session_closed = False
        self.acknowledged = False  # the runtime has confirmed this connection as the live one
        self.superseded = False
        self.token = ""  # the connection's current token (re-verified by the revocation backstop)
        self.live: Live | None = None
        self.revoked: ErrorCode | None = None  # the token was revoked: the session ends
        self._sealed = False  # the last frame is out: nothing may follow it
        self._send_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._refreshed = asyncio.Event()
        self._greeted = asyncio.Event()  # `connected` is out: events may follow
        self.log = log.bind(connection_id=self.connection_id, protocol="chat")

    # ----------------------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        await self.ws.accept()
        connections = metrics.WS_CONNECTIONS_ACTIVE.labels("chat")
        connections.inc()
        try:
            try:
                async with self.ctx.admitting():
                    await self._open()
            except Refused as exc:
                self.log.info("chat.refused", reason=exc.reason)
                if exc.code is Codes.REALTIME_SERVER_BUSY:
                    await self._close(CLOSE_TRY_AGAIN, exc.reason)
                elif exc.code is Codes.REALTIME_SESSION_NOT_FOUND and self.resume is not None:
                    params = {"conversation_id": self.resume.session_id[:64]}
                    with contextlib.suppress(Exception):
                        await self._send(MessageError(error=_text(exc.code, params)))
                    await self._close(CLOSE_NOT_FOUND, exc.reason)
                else:
                    await self._close(CLOSE_UNAUTHORIZED, exc.reason)
                return
            except WebSocketDisconnect:
                raise
            except Exception as exc:
                if is_outage(exc):  # Redis or the bus is away: "try again later", no traceback
                    self.log.warning("chat.open_unavailable", error=describe(exc))
                    await self._close(CLOSE_TRY_AGAIN, Codes.SERVICE_UNAVAILABLE.code)
                else:
                    self.log.exception("chat.open_failed")
                    await self._close(CLOSE_UNAVAILABLE, Codes.SERVICE_UNAVAILABLE.code)
                return
            assert self.principal is not None
            self.live = self.ctx.live.add("chat", self.principal, self.token, self._revoke)
            tasks = [
                asyncio.create_task(self._receive_loop(), name="chat-receive"),
                asyncio.create_task(self._heartbeat_loop(), name="chat-heartbeat"),
                asyncio.create_task(self._expiry_loop(), name="chat-expiry"),
                asyncio.create_task(self._done.wait(), name="chat-done"),
            ]
            await asyncio.wait({tasks[0], tasks[2], tasks[3]}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
        except WebSocketDisconnect:
            pass
        finally:
            connections.dec()
            await self._finish()

    async def _open(self) -> None:
        token = self.ws.query_params.get("token")
        if not token:
            raise Refused(Codes.CHAT_TOKEN_REQUIRED)
        try:
            principal = await self.ctx.auth.verify(token)
        except ParleyError as exc:
            raise Refused(exc.code) from exc
        if not _chat_token(principal) or not principal.agent_id or principal.expires_at is None:
            raise Refused(Codes.CHAT_TOKEN_REQUIRED)
        attributes: dict[str, str | bool] = {
            "agent.id": principal.agent_id,
            "chat.resume": self.resume is not None,
        }
        with tracer.start_as_current_span("chat.connect", attributes=attributes):
            record = None
            if self.resume is not None:
                record = await find_chat(self.ctx.redis, self.resume.session_id, principal)
            admission: Admission = await admit(
                self.ctx.auth,
                self.ctx.broker,
                credential=token,
                agent_id=principal.agent_id,
                timeout_s=self.settings.bus_request_timeout_s,
            )
            self.principal, self.token = admission.principal, token
            self.expires_at = principal.expires_at
            ttl = self.settings.gateway_resume_ttl_s
            if record is not None:
                # The session's output is read from its start again (see the module docstring).
                self.started_at = record.started_at
                self.bridge = self.ctx.bridge(record.conversation_id)
                await self.bridge.attach(self._on_output, self._on_control)
                await self.bridge.send(
                    ClientConnected(at=datetime.now(UTC), connection_id=self.connection_id)
                )
                await touch_chat(self.ctx.redis, record.conversation_id, ttl)
                await touch(self.ctx.redis, record.conversation_id, ttl)
            else:
                self.started_at = datetime.now(UTC)
                self.bridge = await open_session(
                    self.ctx,
                    admission,
                    connection_id=self.connection_id,
                    on_output=self._on_output,
                    on_control=self._on_control,
                    channel="web-chat",
                )
                conv = self.bridge.conversation_id
                await remember_chat(self.ctx.redis, conv, principal, admission.agent_id, self.started_at, ttl)
        session_id = str(self.bridge.conversation_id)
        self.log = self.log.bind(conversation_id=session_id)
        self.log.info(
            "chat.session_open", agent_id=admission.agent_id, resumed=record is not None, last_event=self.seen
        )
        await self._send(Connected(session_id=session_id))
        self._greeted.set()

    def _revoke(self, code: ErrorCode) -> None:
        """The token was revoked (`LiveConnections`): end the session, close the socket."""
        if not (self.session_closed or self.superseded):
            self.revoked = code
            self._done.set()

    async def _finish(self) -> None:
        if self.live is not None:
            self.ctx.live.remove(self.live)
        bridge = self.bridge
        if self.revoked is not None:
            await self._close_revoked(self.revoked)
        if bridge is not None:
            if self.revoked is not None:
                # A revoked token ends what it opened: the runtime closes the session (`user_exit`).
                with contextlib.suppress(Exception):
                    end = InputEnd(
                        at=datetime.now(UTC),
                        connection_id=self.connection_id,
                        reason=ConversationEndReason.USER_EXIT,
                    )
                    await bridge.send(end)
            elif not self.session_closed and not self.superseded:
                # The socket is gone: the runtime ends the session after its grace period unless a
                # connection resumes it.
                with contextlib.suppress(Exception):
                    gone = ClientDisconnected(at=datetime.now(UTC), connection_id=self.connection_id)
                    await bridge.send(gone)
                    ttl = self.settings.gateway_resume_ttl_s
                    await touch(self.ctx.redis, bridge.conversation_id, ttl)
                    await touch_chat(self.ctx.redis, bridge.conversation_id, ttl)
            await bridge.detach()
        await self._close(1000, "")

    async def _close_revoked(self, code: ErrorCode) -> None:
        """The answer being streamed ends, `message-error` with the code, `session-closed`
        (`user_exit`), then close 4401 with the code. None of these carries a `seq`: they are the
        connection's, not the session output's (a resume replays the runtime's own end)."""
        frames: list[BaseModel] = []
        if self.turn is not None:
            frames.append(ResponseEnd(content="".join(self.turn)))
        now = datetime.now(UTC)
        frames += [
            MessageError(error=_text(code)),
            SessionClosed(
                session_id=str(self.bridge.conversation_id if self.bridge else ""),
                status=_STATUS.get(ConversationEndReason.USER_EXIT, "completed"),
                reason=ConversationEndReason.USER_EXIT.value,
                duration=round((now - self.started_at).total_seconds(), 3),
                timestamp=now,
            ),
        ]
        with contextlib.suppress(Exception):
            async with self._send_lock:
                self._sealed = True
                for frame in frames:
                    await self.ws.send_text(frame.model_dump_json(exclude={"seq"}))
        await self._close(CLOSE_UNAUTHORIZED, code.code)
        self.log.info("chat.token_revoked", code=code.code)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])

    # ----------------------------------------------------------------------------- client → bus

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if not self.bucket.take():
                    rate = self.settings.gateway_input_rate_per_s
                    raise ChatFrameError(Codes.REALTIME_RATE_LIMITED, {"rate": f"{rate:g}"})
                text = message.get("text")
                if text is None:
                    raise ChatFrameError(Codes.REALTIME_INVALID_JSON)
                size = len(text.encode())
                limit = self.settings.gateway_max_text_frame_bytes
                if size > limit:
                    raise ChatFrameError(Codes.REALTIME_FRAME_TOO_LARGE, {"size": size, "limit": limit})
                frame = parse_chat_frame(text)
                if isinstance(frame, ChatMessage):
                    await self._on_message(frame)
                elif isinstance(frame, ChatTokenRefresh):
                    await self._on_refresh(frame)
            except ChatFrameError as exc:
                await self._send(exc.event())

    async def _on_message(self, frame: ChatMessage) -> None:
        assert self.bridge is not None
        artifacts = check_artifacts(
            frame,
            max_items=self.settings.gateway_chat_max_artifacts,
            max_bytes=self.settings.gateway_chat_max_artifacts_bytes,
        )
        text = with_artifacts(frame.content, artifacts)
        item = InputText(at=datetime.now(UTC), connection_id=self.connection_id, text=text)
        attributes: dict[str, str | int] = {
            "input.type": "message",
            "input.artifacts": len(frame.artifacts or []),
        }
        with tracer.start_as_current_span("chat.input", attributes=attributes):
            try:
                # Returns once JetStream has stored it; a resend with the same `id` is stored once.
                await self.bridge.send(item, client_id=frame.id)
            except Exception as exc:
                self.log.warning("chat.input_publish_failed", error=str(exc))
                raise ChatFrameError(Codes.SERVICE_UNAVAILABLE, frame_id=frame.id) from exc
        await self._send(MessageAck(id=frame.id, message=frame.content))

    async def _on_refresh(self, frame: ChatTokenRefresh) -> None:
        assert self.principal is not None
        try:
            fresh = await self.ctx.auth.verify(frame.token)
        except ParleyError as exc:
            await self._send(TokenRefreshError(error=f"{exc.code.code}: {exc.message}"))
            return
        if not _chat_token(fresh) or fresh.expires_at is None:
            await self._send(TokenRefreshError(error=_text(Codes.CHAT_TOKEN_REQUIRED)))
            return
        if not same_scope(self.principal, fresh):
            await self._send(TokenRefreshError(error=_text(Codes.CHAT_REFRESH_SCOPE_MISMATCH)))
            return
        self.expires_at = fresh.expires_at
        self.token = frame.token
        if self.live is not None:  # revocation now follows the fresh token
            self.ctx.live.replace(self.live, fresh, frame.token)
        self._refreshed.set()
        self.log.info("chat.token_refreshed", expires_at=fresh.expires_at.isoformat())
        await self._send(TokenRefreshAck(expires_at=fresh.expires_at))

    # ----------------------------------------------------------------------------- timers

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_chat_heartbeat_s)
            try:
                await self._send(Heartbeat())
            except Exception:  # the socket is gone: the receive loop notices
                return

    async def _until_refreshed(self, at: datetime) -> bool:
        """Wait until `at`; True as soon as a refresh moves the expiry instead."""
        delay = (at - datetime.now(UTC)).total_seconds()
        try:
            await asyncio.wait_for(self._refreshed.wait(), max(0.0, delay))
        except TimeoutError:
            return False
        return True

    async def _expiry_loop(self) -> None:
        margin = timedelta(seconds=self.settings.gateway_chat_expiry_margin_s)
        lead = timedelta(seconds=self.settings.gateway_chat_refresh_lead_s)
        while True:
            self._refreshed.clear()
            deadline = self.expires_at - margin
            if await self._until_refreshed(deadline - lead):
                continue
            await self._send(TokenRefreshRequired())
            if await self._until_refreshed(deadline):
                continue
            self.log.info("chat.token_expired")
            await self._send(TokenExpired())
            await self._close(CLOSE_UNAUTHORIZED, Codes.CHAT_TOKEN_EXPIRED.code)
            return

    # ----------------------------------------------------------------------------- bus → client

    async def _on_output(self, out: SessionOutput) -> None:
        await self._greeted.wait()  # `connected` comes first
        event = out.event
        frames: list[SessionFrame] = []
        if isinstance(event, ServerTextDelta):
            if self.turn is None:
                self.turn = []
                frames.append(ResponseStart())
            self.turn.append(event.chunk)
            frames.append(ResponseChunk(content=event.chunk))
        elif isinstance(event, ServerTextFull):
            if self.turn is None:  # a whole message without deltas
                frames += [ResponseStart(), ResponseChunk(content=event.content)]
            self.turn = [event.content]
        elif isinstance(event, ServerTurnComplete | ServerSessionClosed) and self.turn is not None:
            frames.append(ResponseEnd(content="".join(self.turn)))
            self.turn = None
        elif isinstance(event, ServerError):
            frames.append(MessageError(error=f"{event.code}: {event.message}"))
        if isinstance(event, ServerSessionClosed):
            now = datetime.now(UTC)
            frames.append(
                SessionClosed(
                    session_id=str(self.bridge.conversation_id if self.bridge else ""),
                    status=_STATUS.get(event.reason, "completed"),
                    reason=event.reason.value,
                    duration=round((now - self.started_at).total_seconds(), 3),
                    timestamp=now,
                )
            )
        try:
            for frame in frames:
                self.seq += 1
                frame.seq = self.seq
                # Seen before a resume: skipped, except the end (a resume after it gets it again).
                if self.seq > self.seen or isinstance(frame, SessionClosed):
                    await self._send(frame)
        except Exception as exc:  # the socket is gone; the runtime's events stay in the stream
            self.log.info("chat.send_failed", error=str(exc))
            self._done.set()
            return
        if isinstance(event, ServerSessionClosed):
            self.session_closed = True
            self._done.set()

    async def _on_control(self, control: SessionControl) -> None:
        """Which connection the runtime serves (timing is the Kivox `tick`'s business)."""
        if control.connection_id == self.connection_id:
            self.acknowledged = True
        elif self.acknowledged and control.connection_id is not None and not self.superseded:
            # Another connection resumed this session: this socket is stale.
            self.log.info("chat.superseded")
            self.superseded = True
            self._done.set()
            await self._close(CLOSE_SUPERSEDED, "superseded by a newer connection")

    async def _send(self, frame: BaseModel) -> None:
        # `seq` is on the frames made from the session's output only.
        text = frame.model_dump_json(exclude={"seq"} if getattr(frame, "seq", 0) is None else None)
        async with self._send_lock:
            if not self._sealed:  # after a revocation's last frame, nothing more goes out
                await self.ws.send_text(text)


def _text(code: ErrorCode, params: dict[str, Any] | None = None) -> str:
    return f"{code.code}: {envelope(code, params=params).message}"
