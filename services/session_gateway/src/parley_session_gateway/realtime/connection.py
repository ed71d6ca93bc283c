"""One `/realtime` WebSocket: the handshake, then frames to bus input and bus output to frames.

No conversation logic lives here. The connection validates frames (each invalid one is answered
with an `error` event and dropped; the session lives on), enforces the frame size and rate limits,
forwards input to the session's runtime, relays the runtime's events in order, and makes a `tick`
every second from the timing the runtime publishes. It is registered in the gateway's
`LiveConnections` while open: when auth revokes its credential it ends the session (`user_exit`)
and closes with 4401 `auth.credential_revoked` (docs/realtime.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from opentelemetry import trace
from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from parley_common import metrics
from parley_common.auth_contract import Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes, ErrorCode, envelope
from parley_common.outages import describe, is_outage
from parley_common.session_contract import (
    ClientCancel,
    ClientConnected,
    ClientDisconnected,
    ClientEndSession,
    ClientHandshake,
    ClientInputAudio,
    ClientInputAudioStream,
    ClientInputText,
    ClientMessage,
    InputCancel,
    InputEnd,
    InputText,
    ServerAudioDelta,
    ServerError,
    ServerHandshakeError,
    ServerHandshakeOK,
    ServerSessionClosed,
    ServerTick,
    SessionControl,
    SessionInput,
    SessionOutput,
)
from parley_common.voice_formats import DirectiveError, VoiceFormats, parse_handshake_voice
from parley_session_gateway.live import Live
from parley_session_gateway.realtime.access import Admission, Refused, admit, check_resume, touch
from parley_session_gateway.realtime.bridge import SessionBridge
from parley_session_gateway.realtime.frames import FrameError, parse_client_frame
from parley_session_gateway.realtime.origin import socket_credential
from parley_session_gateway.realtime.ratelimit import TokenBucket
from parley_session_gateway.realtime.voice import VoiceLink
from parley_session_gateway.sessions import GatewayContext, open_session

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.session_gateway")

# Application close codes (parley_common.errors.CloseCodes).
CLOSE_HANDSHAKE_FAILED = CloseCodes.HANDSHAKE_FAILED
CLOSE_SUPERSEDED = CloseCodes.SUPERSEDED


@dataclass(frozen=True)
class ResumeRequest:
    conversation_id: str
    last_event: int


class RealtimeConnection:
    def __init__(self, ctx: GatewayContext, ws: WebSocket, resume: ResumeRequest | None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.ws = ws
        self.resume = resume
        self.connection_id = uuid.uuid4().hex
        self.bridge: SessionBridge | None = None
        self.bucket = TokenBucket(self.settings.gateway_input_rate_per_s, self.settings.gateway_input_burst)
        self.audio_bucket = TokenBucket(
            self.settings.gateway_audio_frames_per_s, self.settings.gateway_audio_frames_burst
        )
        self.voice: VoiceLink | None = None  # a voice session's audio in and out (realtime/voice.py)
        self.audio_mode: Literal["utterance", "stream"] | None = None
        self.timing: SessionControl | None = None
        self.acknowledged = False  # the runtime has confirmed this connection as the live one
        self.session_closed = False
        self.superseded = False
        self.principal: Principal | None = None
        self.credential = ""  # kept for the revocation backstop's re-verification; never logged
        self.live: Live | None = None
        self.revoked: ErrorCode | None = None  # the credential was revoked: the session ends
        self._sealed = False  # the last frame is out: nothing may follow it
        self._send_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._greeted = asyncio.Event()  # handshake_ok is out: events may follow
        self.log = log.bind(connection_id=self.connection_id)

    # ----------------------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        await self.ws.accept()
        connections = metrics.WS_CONNECTIONS_ACTIVE.labels("realtime")
        connections.inc()
        try:
            hello = await self._handshake_frame()
            if hello is None:
                return
            try:
                async with self.ctx.admitting():
                    await self._open(hello)
            except Refused as exc:
                self.log.info("realtime.handshake_refused", reason=exc.reason)
                await self._refuse(exc.reason)
                return
            except WebSocketDisconnect:
                raise
            except Exception as exc:
                if is_outage(exc):  # Redis or the bus is away: a clean refusal, no traceback
                    self.log.warning("realtime.handshake_unavailable", error=describe(exc))
                else:
                    self.log.exception("realtime.handshake_failed")
                await self._refuse(Codes.SERVICE_UNAVAILABLE.code)
                return
            assert self.principal is not None
            self.live = self.ctx.live.add("realtime", self.principal, self.credential, self._revoke)
            receiver = asyncio.create_task(self._receive_loop(), name="realtime-receive")
            ticker = asyncio.create_task(self._tick_loop(), name="realtime-tick")
            closer = asyncio.create_task(self._done.wait())
            await asyncio.wait({receiver, closer}, return_when=asyncio.FIRST_COMPLETED)
            for task in (receiver, ticker, closer):
                task.cancel()
            for task in (receiver, ticker, closer):
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
        except WebSocketDisconnect:
            pass
        finally:
            connections.dec()
            await self._finish()

    async def _handshake_frame(self) -> ClientHandshake | None:
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.settings.gateway_handshake_timeout_s)
        except TimeoutError:
            await self._refuse(Codes.REALTIME_HANDSHAKE_TIMEOUT.code)
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        try:
            if text is None or len(text) > self.settings.gateway_max_text_frame_bytes:
                raise FrameError(Codes.REALTIME_HANDSHAKE_REQUIRED)
            frame = parse_client_frame(text)
        except FrameError:
            await self._refuse(Codes.REALTIME_HANDSHAKE_REQUIRED.code)
            return None
        if not isinstance(frame, ClientHandshake):
            await self._refuse(Codes.REALTIME_HANDSHAKE_REQUIRED.code)
            return None
        return frame

    async def _open(self, hello: ClientHandshake) -> None:
        ctx = self.ctx
        credential = socket_credential(self.ws, self.settings)
        with tracer.start_as_current_span("realtime.handshake", attributes={"agent.id": hello.agent_id}):
            admission = await admit(
                ctx.auth,
                ctx.broker,
                credential=credential,
                agent_id=hello.agent_id,
                timeout_s=self.settings.bus_request_timeout_s,
            )
            self.principal, self.credential = admission.principal, credential or ""
            try:
                voice = parse_handshake_voice(hello.channel, hello.render_directive)
            except DirectiveError as exc:
                raise Refused(exc.code) from None
            if self.resume is not None:
                conversation_id = await check_resume(ctx.redis, self.resume.conversation_id, admission)
                if voice.formats is not None:
                    await self._voice_link(conversation_id, admission, voice.formats)
                self.bridge = ctx.bridge(conversation_id, self.resume.last_event)
                await self.bridge.attach(self._on_output, self._on_control)
                await self.bridge.send(self._input(ClientConnected))
            else:
                conversation_id = uuid.uuid4()
                if voice.formats is not None:
                    # Subscribed to the agent's audio before the session starts (the greeting).
                    await self._voice_link(conversation_id, admission, voice.formats)
                self.bridge = await open_session(
                    ctx,
                    admission,
                    connection_id=self.connection_id,
                    on_output=self._on_output,
                    on_control=self._on_control,
                    channel=hello.channel,
                    render_directive=voice.render_directive,
                    voice=voice.formats,
                    conversation_id=conversation_id,
                )
        self.log = self.log.bind(conversation_id=str(conversation_id))
        self.log.info("realtime.session_open", resumed=self.resume is not None, agent_id=admission.agent_id)
        await self._send(ServerHandshakeOK(conversation_id=str(conversation_id)))
        if self.voice is not None:
            # Not numbered (like ticks): the gateway's own, not the conversation's.
            await self._send(self.voice.audio_format_signal())
        self._greeted.set()

    async def _voice_link(
        self, conversation_id: uuid.UUID, admission: Admission, formats: VoiceFormats
    ) -> None:
        self.voice = VoiceLink(
            self.ctx.broker.connection,
            self.settings,
            conversation_id=conversation_id,
            agent_id=admission.agent_id,
            agent_voice=admission.voice,
            connection_id=self.connection_id,
            formats=formats,
            greeted=self._greeted,
            send_frame=self._send,
            send_audio=self._send_agent_audio,
            forward=self._forward_voice,
        )
        await self.voice.start()

    def _revoke(self, code: ErrorCode) -> None:
        """The credential was revoked (`LiveConnections`): end the session, close the socket."""
        if not (self.session_closed or self.superseded):
            self.revoked = code
            self._done.set()

    async def _finish(self) -> None:
        if self.live is not None:
            self.ctx.live.remove(self.live)
        if self.voice is not None:
            with contextlib.suppress(Exception):
                await self.voice.close()
        bridge = self.bridge
        if self.revoked is not None:
            await self._close_revoked(self.revoked)
        if bridge is not None:
            if self.revoked is not None:
                # A revoked credential ends what it opened: the runtime closes the session
                # (`user_exit` in the transcript) instead of waiting for a reconnect.
                with contextlib.suppress(Exception):
                    await bridge.send(self._input(InputEnd, reason=ConversationEndReason.USER_EXIT))
            elif not self.session_closed and not self.superseded:
                # The socket dropped: the runtime keeps the session for its grace period.
                with contextlib.suppress(Exception):
                    await bridge.send(self._input(ClientDisconnected))
                    await touch(self.ctx.redis, bridge.conversation_id, self.settings.gateway_resume_ttl_s)
            await bridge.detach()
        if self.ws.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _close_revoked(self, code: ErrorCode) -> None:
        """`error` with the code, `session_closed` (`user_exit`), then close 4401 with the code."""
        frames = [
            ServerError(code=code.code, message=envelope(code).message),
            ServerSessionClosed(reason=ConversationEndReason.USER_EXIT),
        ]
        with contextlib.suppress(Exception):
            async with self._send_lock:
                self._sealed = True
                for frame in frames:
                    await self.ws.send_text(frame.model_dump_json())
        with contextlib.suppress(Exception):
            await self.ws.close(code=CloseCodes.UNAUTHORIZED, reason=code.code)
        self.log.info("realtime.credential_revoked", code=code.code)

    async def _refuse(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._send(ServerHandshakeError(reason=reason))
            await self.ws.close(code=CLOSE_HANDSHAKE_FAILED, reason=reason[:120])

    # ----------------------------------------------------------------------------- client → bus

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            # Audio frames (binary, and the small JSON headers announcing them) have their own budget.
            audio = data is not None or (text is not None and len(text) < 128 and '"input_audio' in text)
            bucket = self.audio_bucket if audio else self.bucket
            if not bucket.take():
                rate = (
                    self.settings.gateway_audio_frames_per_s
                    if audio
                    else self.settings.gateway_input_rate_per_s
                )
                await self._error(Codes.REALTIME_RATE_LIMITED, {"rate": f"{rate:g}"})
                continue
            try:
                if text is not None:
                    await self._on_text(text)
                elif data is not None:
                    await self._on_binary(data)
            except FrameError as exc:
                await self._send(exc.event())

    async def _on_text(self, text: str) -> None:
        self.audio_mode = None  # an utterance's binary frames end at the next JSON message
        if self.voice is not None and self.voice.upload is not None:
            await self.voice.end_upload()
        size = len(text.encode())
        if size > self.settings.gateway_max_text_frame_bytes:
            raise FrameError(
                Codes.REALTIME_FRAME_TOO_LARGE,
                {"size": size, "limit": self.settings.gateway_max_text_frame_bytes},
            )
        frame: ClientMessage = parse_client_frame(text)
        if isinstance(frame, ClientHandshake):
            raise FrameError(Codes.REALTIME_ALREADY_STARTED)
        if isinstance(frame, ClientInputText):
            if self.voice is not None:
                self.voice.user_input()
            await self._forward(self._input(InputText, text=frame.text), "input_text")
        elif isinstance(frame, ClientInputAudio):
            self.audio_mode = "utterance"
            if self.voice is not None:
                self.voice.begin_upload()
        elif isinstance(frame, ClientInputAudioStream):
            self.audio_mode = "stream"
        elif isinstance(frame, ClientCancel):
            if self.voice is not None:
                await self.voice.interrupt()  # no further audio of this turn reaches the socket
            await self._forward(self._input(InputCancel), "cancel")
        elif isinstance(frame, ClientEndSession):
            await self._forward(self._input(InputEnd), "end")

    async def _on_binary(self, data: bytes) -> None:
        mode = self.audio_mode
        if mode is None:
            raise FrameError(Codes.REALTIME_UNEXPECTED_BINARY)
        if mode == "stream":
            self.audio_mode = None  # `input_audio_stream` announces exactly one binary frame
        limit = self.settings.gateway_max_binary_frame_bytes
        if len(data) > limit:
            raise FrameError(Codes.REALTIME_FRAME_TOO_LARGE, {"size": len(data), "limit": limit})
        if self.voice is None:
            raise FrameError(Codes.REALTIME_AUDIO_UNSUPPORTED)
        if mode == "stream":
            await self.voice.stream_chunk(data)
        elif not await self.voice.add_upload(data):
            self.audio_mode = None  # the upload ended on its idle timeout: this frame is unannounced
            raise FrameError(Codes.REALTIME_UNEXPECTED_BINARY)

    async def _forward_voice(self, item: SessionInput, client_id: str | None) -> None:
        """A voice session's input (a transcript's turn, a barge-in's cancel), stored durably."""
        assert self.bridge is not None
        kind = getattr(item, "type", "input")
        with tracer.start_as_current_span("realtime.input", attributes={"input.type": f"voice.{kind}"}):
            try:
                await self.bridge.send(item, client_id)
            except Exception as exc:
                self.log.warning("realtime.input_publish_failed", error=str(exc))
                await self._send(FrameError(Codes.SERVICE_UNAVAILABLE).event())

    async def _forward(self, item: SessionInput, kind: str) -> None:
        assert self.bridge is not None
        # A trace starts at each input; the runtime's turn continues it (W3C headers on the bus).
        with tracer.start_as_current_span("realtime.input", attributes={"input.type": kind}):
            try:
                await self.bridge.send(item)
            except Exception as exc:
                self.log.warning("realtime.input_publish_failed", error=str(exc))
                raise FrameError(Codes.SERVICE_UNAVAILABLE) from exc

    def _input(self, model: type[BaseModel], **fields: Any) -> Any:
        return model(at=datetime.now(UTC), connection_id=self.connection_id, **fields)

    # ----------------------------------------------------------------------------- bus → client

    async def _on_output(self, out: SessionOutput) -> None:
        # The runtime may be faster than the handshake reply; it must still come first.
        await self._greeted.wait()
        event = out.event
        try:
            if isinstance(event, ServerAudioDelta):
                # JSON header, then the audio itself in the immediately following binary frame.
                async with self._send_lock:
                    if self._sealed:
                        return
                    await self.ws.send_text(event.model_dump_json(include={"type", "size"}))
                    await self.ws.send_bytes(event.audio)
            else:
                await self._send(event)
            if self.voice is not None:
                await self.voice.observe(event)
        except Exception as exc:  # the socket is gone; the runtime's events stay in the stream
            self.log.info("realtime.send_failed", error=str(exc))
            self._done.set()
            return
        if isinstance(event, ServerSessionClosed):
            self.session_closed = True
            self._done.set()

    async def _on_control(self, control: SessionControl) -> None:
        await self._greeted.wait()
        if control.connection_id == self.connection_id:
            self.acknowledged = True
        elif self.acknowledged and control.connection_id is not None:
            # A reconnect resumed this conversation elsewhere: this socket is stale.
            self.superseded = True
            self._done.set()
            with contextlib.suppress(Exception):
                await self.ws.close(code=CLOSE_SUPERSEDED, reason="superseded by a newer connection")
            return
        self.timing = control

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_tick_interval_s)
            timing = self.timing
            if timing is None:
                continue
            now = datetime.now(UTC)
            remaining = (timing.deadline_at - now).total_seconds() if timing.deadline_at else 0.0
            elapsed = (now - timing.started_at).total_seconds()
            tick = ServerTick(
                remaining_ms=max(0, int(remaining * 1000)), elapsed_ms=max(0, int(elapsed * 1000))
            )
            try:
                await self._send(tick)
            except Exception:  # the socket is gone: the receive loop notices and ends the connection
                return

    # ----------------------------------------------------------------------------- sending

    async def _send_agent_audio(self, audio: bytes) -> bool:
        """`audio_delta {size}` then the bytes, unless the agent was interrupted meanwhile."""
        async with self._send_lock:
            if self._sealed or (self.voice is not None and self.voice.is_muted()):
                return False
            await self.ws.send_text(
                ServerAudioDelta(size=len(audio), audio=b"").model_dump_json(include={"type", "size"})
            )
            await self.ws.send_bytes(audio)
            return True

    async def _send(self, frame: BaseModel) -> None:
        async with self._send_lock:
            if not self._sealed:  # after a revocation's last frame, nothing more goes out
                await self.ws.send_text(frame.model_dump_json())

    async def _error(self, code: ErrorCode, params: dict[str, Any]) -> None:
        await self._send(ServerError(code=code.code, message=envelope(code, params=params).message))
