"""One `/realtime` WebSocket: the Kivox frames of a session (docs/realtime.md).

The skeleton (admission, resume or start, the pumps, revocation, the end) is
`connection.SessionConnection`'s; this is what Kivox adds: the `handshake` frame before admission
(`handshake_ok` / `handshake_error`), text and audio frames in (each invalid one is answered with an
`error` event and dropped; audio has its own rate limit), the runtime's events out as they are
(`audio_delta` plus its binary frame), a `tick` every second from the timing the runtime gives
(on an output, or on the control subject; the most recent by output index counts) (sent on the
gateway's one timer, ticks.py),
and a voice session's audio (`VoiceLink`). A revoked credential gets `error` and `session_closed`
(`user_exit`) before the 4401 close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel
from starlette.types import Message
from starlette.websockets import WebSocket

from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes, ErrorCode, envelope
from parley_common.session_contract import (
    ClientCancel,
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
    ServerEvent,
    ServerHandshakeError,
    ServerHandshakeOK,
    ServerSessionClosed,
    SessionControl,
    SessionInput,
    SessionOutput,
    SessionTiming,
    timing_rank,
)
from parley_common.telemetry import current_span
from parley_common.token_bucket import TokenBucket
from parley_common.voice_formats import DirectiveError, VoiceFormats, parse_handshake_voice
from parley_session_gateway.access import Admission, Refused
from parley_session_gateway.connection import SessionConnection, tracer
from parley_session_gateway.frame_json import ClientFrameError
from parley_session_gateway.realtime.frames import FrameError, parse_client_frame
from parley_session_gateway.realtime.origin import socket_credential
from parley_session_gateway.realtime.voice import VoiceLink, VoiceOutlets
from parley_session_gateway.resume import Resume, check_resume
from parley_session_gateway.sessions import GatewayContext
from parley_session_gateway.ticks import Ticker


def tick_json(remaining_ms: int, elapsed_ms: int) -> str:
    """`ServerTick(remaining_ms=…, elapsed_ms=…).model_dump_json()`, the same text, written without
    building the model (~0.25 µs instead of ~2.6; a tick per session per second)."""
    return f'{{"type":"tick","remaining_ms":{remaining_ms},"elapsed_ms":{elapsed_ms}}}'


class RealtimeConnection(SessionConnection):
    protocol = "realtime"
    opening = "handshake"

    def __init__(self, ctx: GatewayContext, ws: WebSocket, resume: Resume | None) -> None:
        super().__init__(ctx, ws, resume)
        self.audio_bucket = TokenBucket(
            self.settings.gateway_audio_frames_per_s, self.settings.gateway_audio_frames_burst
        )
        self.hello: ClientHandshake | None = None  # the `handshake` frame, until the session is open
        self.voice: VoiceLink | None = None  # a voice session's audio in and out (realtime/voice.py)
        self.audio_mode: Literal["utterance", "stream"] | None = None
        self._timing_rank: tuple[int, int] | None = None  # how recent `_clock` is (`timing_rank`)
        # The session's timing in Unix seconds (started, deadline or None): what a tick counts
        # from, without building datetimes for each tick of each socket, and without keeping the
        # timing's model (~0.5 KiB a socket).
        self._clock: tuple[float, float | None] | None = None
        self._ticking: asyncio.Task[None] | None = None  # the tick being sent (`tick`)

    # ----------------------------------------------------------------------------- handshake

    async def _before_admission(self) -> bool:
        """The `handshake` frame, within `gateway_handshake_timeout_s`."""
        try:  # `asyncio.timeout`, not `wait_for`: no task made per handshake (~40 µs of CPU)
            async with asyncio.timeout(self.settings.gateway_handshake_timeout_s):
                message = await self.ws.receive()
        except TimeoutError:
            await self._refuse(Refused(Codes.REALTIME_HANDSHAKE_TIMEOUT))
            return False
        if message["type"] == "websocket.disconnect":
            return False
        text = message.get("text")
        try:
            if text is None or len(text) > self.settings.gateway_max_text_frame_bytes:
                raise FrameError(Codes.REALTIME_HANDSHAKE_REQUIRED)
            frame = parse_client_frame(text)
        except FrameError:
            frame = None
        if not isinstance(frame, ClientHandshake):
            await self._refuse(Refused(Codes.REALTIME_HANDSHAKE_REQUIRED))
            return False
        self.hello = frame
        return True

    async def _open(self) -> None:
        # Read once: the frame (~0.4 KiB) is not kept for the socket's life.
        hello, self.hello = self.hello, None
        assert hello is not None
        credential = socket_credential(self.ws, self.settings)
        with current_span(tracer, "realtime.handshake", attributes={"agent.id": hello.agent_id}):
            admission = await self._admission(credential, hello.agent_id)
            try:
                voice = parse_handshake_voice(hello.channel, hello.render_directive)
            except DirectiveError as exc:
                raise Refused(exc.code) from None
            if self.resume is not None:
                conversation_id = await check_resume(self.ctx.redis, self.resume.conversation_id, admission)
                if voice.formats is not None:
                    await self._voice_link(conversation_id, admission, voice.formats)
                await self._resume(conversation_id, self.resume.last_event)
            else:
                conversation_id = uuid.uuid4()
                if voice.formats is not None:
                    # Subscribed to the agent's audio before the session starts (the greeting).
                    await self._voice_link(conversation_id, admission, voice.formats)
                await self._start(
                    admission,
                    channel=hello.channel,
                    render_directive=voice.render_directive,
                    voice=voice.formats,
                    conversation_id=conversation_id,
                )
        self.log = self.log.bind(conversation_id=str(conversation_id))
        # The one line per opening at INFO (uvicorn's own are DEBUG, `parley_common.logging`): who,
        # from where, which session.
        client = self.ws.client.host if self.ws.client is not None else None
        self.log.info(
            "realtime.session_open",
            resumed=self.resume is not None,
            agent_id=admission.agent_id,
            client=client,
        )
        await self._send(ServerHandshakeOK(conversation_id=str(conversation_id)))
        if self.voice is not None:
            # Not numbered (like ticks): the gateway's own, not the conversation's.
            await self._send(self.voice.audio_format_signal())
        self._greeted.set()

    async def _voice_link(
        self, conversation_id: uuid.UUID, admission: Admission, formats: VoiceFormats
    ) -> None:
        outlets = VoiceOutlets(self._greeted, self._send, self._send_agent_audio, self._forward_voice)
        self.voice = VoiceLink(
            self.ctx.broker.connection,
            self.settings,
            outlets,
            conversation_id=conversation_id,
            admission=admission,
            connection_id=self.connection_id,
            formats=formats,
        )
        await self.voice.start()

    async def _refuse(self, exc: Refused) -> None:
        """`handshake_error` with the reason, then close (`HANDSHAKE_FAILED`)."""
        reason = exc.reason
        try:
            await self._send(ServerHandshakeError(reason=reason))
        except Exception:
            return
        await self._close(CloseCodes.HANDSHAKE_FAILED, reason)

    async def _unavailable(self, outage: bool) -> None:
        await self._refuse(Refused(Codes.SERVICE_UNAVAILABLE))

    async def _finish(self) -> None:
        if self.voice is not None:
            with contextlib.suppress(Exception):
                await self.voice.close()
        await super()._finish()

    def _revoked_frames(self, code: ErrorCode) -> list[BaseModel]:
        """`error` with the code, then `session_closed` (`user_exit`)."""
        return [
            ServerError(code=code.code, message=envelope(code).message),
            ServerSessionClosed(reason=ConversationEndReason.USER_EXIT),
        ]

    # ----------------------------------------------------------------------------- client → bus

    def _refusal(
        self, code: ErrorCode, params: dict[str, Any] | None = None, frame_id: str | None = None
    ) -> ClientFrameError:
        return FrameError(code, params)

    def _budget(self, message: Message) -> tuple[TokenBucket, float]:
        text, data = message.get("text"), message.get("bytes")
        # Audio frames (binary, and the small JSON headers announcing them) have their own budget.
        if data is not None or (text is not None and len(text) < 128 and '"input_audio' in text):
            return self.audio_bucket, self.settings.gateway_audio_frames_per_s
        return self.bucket, self.settings.gateway_input_rate_per_s

    async def _on_message(self, message: Message) -> None:
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            await self._on_text(text)
        elif data is not None:
            await self._on_binary(data)

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
            await self._forward(self._input(InputText, text=frame.text), {"input.type": "input_text"})
        elif isinstance(frame, ClientInputAudio):
            self.audio_mode = "utterance"
            if self.voice is not None:
                self.voice.begin_upload()
        elif isinstance(frame, ClientInputAudioStream):
            self.audio_mode = "stream"
        elif isinstance(frame, ClientCancel):
            if self.voice is not None:
                await self.voice.interrupt()  # no further audio of this turn reaches the socket
            await self._forward(self._input(InputCancel), {"input.type": "cancel"})
        elif isinstance(frame, ClientEndSession):
            await self._forward(self._input(InputEnd), {"input.type": "end"})

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
        """A voice session's input (a transcript's turn, a barge-in's cancel), stored durably; a
        failure is reported to the client (no client frame to answer)."""
        kind = getattr(item, "type", "input")
        try:
            await self._forward(item, {"input.type": f"voice.{kind}"}, client_id)
        except FrameError as exc:
            await self._send(exc.event())

    # ----------------------------------------------------------------------------- bus → client

    async def _relay(self, event: ServerEvent) -> None:
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

    async def _on_output(self, out: SessionOutput) -> None:
        if out.timing is not None:  # a turn began or ended
            self._keep_timing(out.timing, timing_rank(out, out.index))
        await super()._on_output(out)
        ticks = self.ctx.ticks
        if out.event.type == "turn_complete" and ticks is not None and self._ticking is None:
            # A tick due soon comes with the turn's end, with the new deadline, in the same write
            # (corked_ws.py); the timer's next one for this socket comes an interval later. A
            # session answered about every interval then costs no write of its own for its ticks.
            frame = (
                self._tick_frame(time.time()) if self._clock is not None and ticks.tick_early(self) else None
            )
            if frame is not None:
                with contextlib.suppress(Exception):  # the socket is gone: the receive loop ends it
                    await self._send_text(frame)

    async def _on_control(self, control: SessionControl) -> None:
        await self._greeted.wait()
        await super()._on_control(control)
        if not self.superseded:
            handed_on = self.bridge.last_index if self.bridge is not None else 0
            self._keep_timing(control, timing_rank(control, handed_on))

    def _keep_timing(self, timing: SessionTiming, rank: tuple[int, int]) -> None:
        """What the ticks count from: the most recent timing (outputs are replayed on a resume or
        a catch-up, and their timing must not replace a newer one)."""
        if self._timing_rank is None or rank >= self._timing_rank:
            self._timing_rank = rank
            deadline = timing.deadline_at.timestamp() if timing.deadline_at is not None else None
            self._clock = (timing.started_at.timestamp(), deadline)

    @property
    def deadline(self) -> float | None:
        """When the session times out if nothing changes (Unix seconds), as the ticks count it."""
        return self._clock[1] if self._clock is not None else None

    async def _pump(self) -> None:
        # Ticked by the gateway's one timer (ticks.py) while the session runs.
        ticks = self.ctx.ticks
        if ticks is None:
            ticks = self.ctx.ticks = Ticker(self.settings.gateway_tick_interval_s)
        ticks.add(self)
        try:
            await super()._pump()
        finally:
            ticks.discard(self)
            if self._ticking is not None:
                self._ticking.cancel()

    def tick(self, now: float) -> None:
        """The ticker's call, every tick interval (`now`: Unix seconds): a `tick` from the
        runtime's timing, written without a task when nothing else is being sent (`_send_text_now`,
        with the group's other ticks at the loop turn's end), else by a short task of its own. A
        previous tick still waiting on the socket (a client that stopped reading) is not joined by
        another."""
        frame = self._tick_frame(now) if self._ticking is None else None
        if frame is not None and not self._send_text_now(frame, alone=True):  # no task when it can go at once
            self._ticking = asyncio.create_task(self._send_tick(frame), name="realtime-tick")

    def _tick_frame(self, now: float) -> str | None:
        """A `tick` as of `now` (Unix seconds), from the runtime's timing (None before there is one)."""
        clock = self._clock
        if clock is None:
            return None
        started, deadline = clock
        remaining = deadline - now if deadline is not None else 0.0
        return tick_json(max(0, int(remaining * 1000)), max(0, int((now - started) * 1000)))

    async def _send_tick(self, frame: str) -> None:
        try:
            with contextlib.suppress(Exception):  # the socket is gone: the receive loop ends the connection
                await self._send_text(frame)
        finally:
            self._ticking = None

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
