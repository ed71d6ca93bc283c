"""One `/chat/ws` connection: a chat client token, text in, streamed responses out.

The skeleton (admission gate, resume or start, pumps, revocation, the end) is
`connection.SessionConnection`'s; the output's frames are `chat.codec.ChatOutput`'s.

Admission is the Kivox path's (`admit`: auth verifies the token, the catalog answers
`catalog.agent.access`) with the agent taken from the token; the session starts the same way
(`open_session`), so the runtime serves both protocols alike. Besides mapping frames the connection
sends a `heartbeat` every `gateway_chat_heartbeat_s`, and keeps its own token expiry: refreshes
move it, and a connection whose token expires without one is closed.

Resumption (`?session_id=…&last_event=…`): the frames made from the session's output are numbered
with `seq` (chat/codec.py); a resumed connection reads the output from its start again, so it
numbers them exactly as the first one did and sends only those after `last_event`: no gap, no
duplicate.

Revocation: while open, the connection is registered in the gateway's `LiveConnections` with its
current token (a refresh replaces it). When auth revokes that token (or the API key that minted
it, or the account), the session ends (`user_exit`) and the socket closes with 4401
`auth.credential_revoked` (docs/chat-ws.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from starlette.types import Message
from starlette.websockets import WebSocket

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes, ErrorCode, ParleyError, envelope
from parley_common.session_contract import InputText, ServerEvent
from parley_common.telemetry import current_span
from parley_session_gateway.access import Refused, same_agent
from parley_session_gateway.chat.codec import ChatOutput
from parley_session_gateway.chat.frames import (
    ChatFrameError,
    ChatMessage,
    ChatTokenRefresh,
    Connected,
    Heartbeat,
    MessageAck,
    MessageError,
    TokenExpired,
    TokenRefreshAck,
    TokenRefreshError,
    TokenRefreshRequired,
    check_artifacts,
    parse_chat_frame,
    with_artifacts,
)
from parley_session_gateway.connection import Loop, SessionConnection, tracer
from parley_session_gateway.frame_json import ClientFrameError
from parley_session_gateway.resume import Resume, find_chat, remember_chat, touch
from parley_session_gateway.sessions import GatewayContext


def _chat_token(principal: Principal) -> bool:
    return principal.kind is CredentialKind.CLIENT_TOKEN and principal.token_type == "chat"


def same_scope(a: Principal, b: Principal) -> bool:
    """Refresh tokens must name the same agent, organization and environment."""
    return same_agent(a.agent_id, b.agent_id) and a.org_id == b.org_id and a.env == b.env


class ChatConnection(SessionConnection):
    protocol = "chat"

    def __init__(self, ctx: GatewayContext, ws: WebSocket, resume: Resume | None = None) -> None:
        super().__init__(ctx, ws, resume)
        self.expires_at = datetime.now(UTC)  # the current token's `exp` (moved by refreshes)
        self.output: ChatOutput | None = None  # the session's output as frames (set when open)
        self._refreshed = asyncio.Event()

    # ----------------------------------------------------------------------------- open and close

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
        with current_span(tracer, "chat.connect", attributes=attributes):
            record = None
            if self.resume is not None:
                record = await find_chat(self.ctx.redis, self.resume.conversation_id, principal)
            admission = await self._admission(token, principal.agent_id)
            self.expires_at = principal.expires_at
            ttl = self.settings.gateway_resume_ttl_s
            if record is not None:
                # The session's output is read from its start again (see chat/codec.py).
                started_at = record.started_at
                await self._resume(record.conversation_id)
                await touch(self.ctx.redis, record.conversation_id, ttl)
            else:
                started_at = datetime.now(UTC)
                await self._start(admission, channel="web-chat")
                assert self.bridge is not None
                conv = self.bridge.conversation_id
                await remember_chat(self.ctx.line, conv, principal, admission.agent_id, started_at, ttl)
        assert self.bridge is not None
        session_id = str(self.bridge.conversation_id)
        seen = self.resume.last_event if self.resume else 0
        self.output = ChatOutput(session_id, started_at, seen)
        self.log = self.log.bind(conversation_id=session_id)
        self.log.info(
            "chat.session_open", agent_id=admission.agent_id, resumed=record is not None, last_event=seen
        )
        await self._send(Connected(session_id=session_id))
        self._greeted.set()

    async def _refuse(self, exc: Refused) -> None:
        if exc.code is Codes.REALTIME_SERVER_BUSY:
            await self._close(CloseCodes.TRY_AGAIN, exc.reason)
        elif exc.code is Codes.REALTIME_SESSION_NOT_FOUND and self.resume is not None:
            params = {"conversation_id": self.resume.conversation_id[:64]}
            with contextlib.suppress(Exception):
                await self._send(MessageError(error=_text(exc.code, params)))
            await self._close(CloseCodes.NOT_FOUND, exc.reason)
        else:
            await self._close(CloseCodes.UNAUTHORIZED, exc.reason)

    async def _unavailable(self, outage: bool) -> None:
        # An outage (Redis or the bus away) is "try again later"; anything else is not.
        code = CloseCodes.TRY_AGAIN if outage else CloseCodes.UNAVAILABLE
        await self._close(code, Codes.SERVICE_UNAVAILABLE.code)

    def _revoked_frames(self, code: ErrorCode) -> list[BaseModel]:
        """The answer being streamed ends, `message-error` with the code, `session-closed`
        (`user_exit`). None of these carries a `seq`: they are the connection's, not the session
        output's (a resume replays the runtime's own end)."""
        if self.output is None:  # not open yet: nothing to end
            return [MessageError(error=_text(code))]
        frames: list[BaseModel] = []
        if self.output.turn is not None:
            frames.append(self.output.end_of_turn())
        return [*frames, MessageError(error=_text(code)), self.output.closed(ConversationEndReason.USER_EXIT)]

    def _encode(self, frame: BaseModel) -> str:
        # `seq` is on the frames made from the session's output only.
        return frame.model_dump_json(exclude={"seq"} if getattr(frame, "seq", 0) is None else None)

    # ----------------------------------------------------------------------------- client → bus

    def _refusal(
        self, code: ErrorCode, params: dict[str, Any] | None = None, frame_id: str | None = None
    ) -> ClientFrameError:
        return ChatFrameError(code, params, frame_id)

    async def _on_message(self, message: Message) -> None:
        text = message.get("text")
        if text is None:
            raise ChatFrameError(Codes.REALTIME_INVALID_JSON)
        size = len(text.encode())
        limit = self.settings.gateway_max_text_frame_bytes
        if size > limit:
            raise ChatFrameError(Codes.REALTIME_FRAME_TOO_LARGE, {"size": size, "limit": limit})
        frame = parse_chat_frame(text)
        if isinstance(frame, ChatMessage):
            await self._on_chat_message(frame)
        elif isinstance(frame, ChatTokenRefresh):
            await self._on_refresh(frame)

    async def _on_chat_message(self, frame: ChatMessage) -> None:
        artifacts = check_artifacts(
            frame,
            max_items=self.settings.gateway_chat_max_artifacts,
            max_bytes=self.settings.gateway_chat_max_artifacts_bytes,
        )
        item = self._input(InputText, text=with_artifacts(frame.content, artifacts))
        attributes = {"input.type": "message", "input.artifacts": len(frame.artifacts or [])}
        # Returns once JetStream has stored it; a resend with the same `id` is stored once.
        await self._forward(item, attributes, client_id=frame.id)
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
        self.credential = frame.token
        if self.live is not None:  # revocation now follows the fresh token
            self.ctx.live.replace(self.live, fresh, frame.token)
        self._refreshed.set()
        self.log.info("chat.token_refreshed", expires_at=fresh.expires_at.isoformat())
        await self._send(TokenRefreshAck(expires_at=fresh.expires_at))

    # ----------------------------------------------------------------------------- timers

    def _loops(self) -> list[Loop]:
        return [("heartbeat", self._heartbeat_loop(), False), ("expiry", self._expiry_loop(), True)]

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
        # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as a refresh wakes it,
        # and `_pump` waits for this timer when the receive ends.
        try:
            async with asyncio.timeout(max(0.0, delay)):
                await self._refreshed.wait()
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
            await self._close(CloseCodes.UNAUTHORIZED, Codes.CHAT_TOKEN_EXPIRED.code)
            return

    # ----------------------------------------------------------------------------- bus → client

    async def _relay(self, event: ServerEvent) -> None:
        assert self.output is not None
        for frame in self.output.frames(event):
            await self._send(frame)


def _text(code: ErrorCode, params: dict[str, Any] | None = None) -> str:
    return f"{code.code}: {envelope(code, params=params).message}"
