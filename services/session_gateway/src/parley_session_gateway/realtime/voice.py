"""The voice side of one `/realtime` socket: user audio to the speech workers, agent audio back.

- **In.** Streamed chunks (`input_audio_stream` + one binary frame) go to the voice session's
  recognition on a speech worker (`RecognitionClient`, opened at the first audio). Uploads
  (`input_audio` + binary frames, ended by the next JSON frame or `gateway_upload_idle_s`) are one
  utterance: a WAV / WebM-Opus / Ogg-Opus file (recognised by its header, on a recognition session of
  that container) or raw audio in the input format.
- **Speech events → client.** `speech_started`, `speech_stopped`, `transcript` (`{text, final,
  utterance}`), `barge_in`, `no_speech` as `signal`s; recognition errors as `error` events. A final
  transcript becomes the user's turn exactly like `input_text`: a durable input whose `Nats-Msg-Id`
  comes from the recognition session and the utterance number, so a repeated transcript (a worker
  re-open replaying the utterance) is one turn.
- **Agent audio → client.** The runtime has the speech workers publish the answer's audio on
  `session.<id>.audio.out` (core NATS, paced); each chunk is relayed as `audio_delta {size}` plus one
  binary frame. Duplicates (same stream, seq not above the last) are dropped; the subscription's
  buffer is bounded. The worker hears `agent_speaking` while chunks flow (echo and barge-in policy).
- **Barge-in / cancel.** Relaying stops at once (the socket gets no further `audio_delta` of the
  interrupted turn), the runtime gets `cancel` (it stops the LLM and the synthesis, and keeps in the
  transcript only what was spoken), and relaying resumes with the next turn (after `turn_complete`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from parley_common.errors import Codes, ErrorCode, ParleyError, envelope
from parley_common.flag import Flag
from parley_common.session_contract import (
    InputCancel,
    InputText,
    ServerError,
    ServerEvent,
    ServerSessionClosed,
    ServerSignal,
    ServerTextDelta,
    ServerTextFull,
    ServerTurnComplete,
    SessionInput,
)
from parley_common.speech_client import RecognitionClient
from parley_common.speech_contract import (
    HDR_SEQ,
    HDR_STREAM,
    BargeIn,
    InputFormat,
    NoSpeech,
    SpeechError,
    SpeechEvent,
    SpeechSessionOpen,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from parley_common.voice_formats import VoiceFormats, detect_container
from parley_session_gateway import bus
from parley_session_gateway.access import Admission
from parley_session_gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

SendFrame = Callable[[BaseModel], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[bool]]
Forward = Callable[[SessionInput, str | None], Awaitable[None]]

_UPLOAD_PIECE = 512 * 1024  # NATS messages stay well under the default 1 MiB payload limit


@dataclass(frozen=True)
class VoiceOutlets:
    """The connection's side of a voice link: what it waits for before sending anything (set once
    `handshake_ok` went out), where its frames and agent audio go, and where recognised input goes."""

    greeted: Flag
    send_frame: SendFrame
    send_audio: SendAudio
    forward: Forward


class VoiceLink:
    def __init__(
        self,
        nc: Client,
        settings: GatewaySettings,
        outlets: VoiceOutlets,
        *,
        conversation_id: UUID,
        admission: Admission,
        connection_id: str,
        formats: VoiceFormats,
    ) -> None:
        self.nc, self.settings = nc, settings
        self.conversation_id, self.agent_id = conversation_id, admission.agent_id
        self.agent_voice = admission.voice  # the agent's `config.voice`
        self.connection_id = connection_id
        self.formats = formats
        self.out = outlets
        self.log = log.bind(conversation_id=str(conversation_id))
        self._clients: dict[str, RecognitionClient] = {}
        self._opening = asyncio.Lock()
        self._retry_at = 0.0
        self._last_unavailable = 0.0
        self._utterances: dict[tuple[str, int], int] = {}  # (recogniser, its utterance) → the socket's
        self.upload: bytearray | None = None
        self._upload_timer: asyncio.Task[None] | None = None
        self._audio_sub: Subscription | None = None
        # Agent audio relay state.
        self.answering = True  # a session begins with a turn (the greeting)
        self.muted = False
        self.speaking = False
        self._stream: str | None = None
        self._seq = -1
        self._old_streams: deque[str] = deque(maxlen=32)
        self.relayed = 0
        self.dropped = 0
        self.closed = False

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Subscribe to the agent's audio (before the session starts: the greeting is spoken)."""
        self._audio_sub = await bus.agent_audio(
            self.nc,
            str(self.conversation_id),
            self._on_audio,
            max_msgs=self.settings.gateway_audio_out_buffer_msgs,
            max_bytes=self.settings.gateway_audio_out_buffer_bytes,
        )

    async def close(self) -> None:
        self.closed = True
        if self._upload_timer is not None:
            self._upload_timer.cancel()
        if self._audio_sub is not None:
            with contextlib.suppress(Exception):
                await self._audio_sub.unsubscribe()
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()

    def audio_format_signal(self) -> ServerSignal:
        return ServerSignal(name="audio_format", data=self.formats.signal_data())

    # ----------------------------------------------------------------------------- user audio

    async def stream_chunk(self, data: bytes) -> None:
        client = await self._recogniser("stream", self.formats.input)
        if client is not None:
            await client.send_audio(data)

    def begin_upload(self) -> None:
        self.upload = bytearray()
        self._arm_upload_timer()

    async def add_upload(self, data: bytes) -> bool:
        """Append a frame to the upload; False when no upload is open (it ended on its timeout)."""
        if self.upload is None:
            return False
        limit = self.settings.gateway_max_upload_bytes
        if len(self.upload) + len(data) > limit:
            self.upload = None
            if self._upload_timer is not None:
                self._upload_timer.cancel()
            await self._error(Codes.REALTIME_UPLOAD_TOO_LARGE, {"limit": limit})
            return True
        self.upload += data
        self._arm_upload_timer()
        return True

    def _arm_upload_timer(self) -> None:
        if self._upload_timer is not None:
            self._upload_timer.cancel()
        self._upload_timer = asyncio.create_task(self._upload_idle(), name="voice-upload-idle")

    async def _upload_idle(self) -> None:
        await asyncio.sleep(self.settings.gateway_upload_idle_s)
        self._upload_timer = None
        await self.end_upload()

    async def end_upload(self) -> None:
        """The upload is complete: recognise it as one utterance."""
        data, self.upload = self.upload, None
        timer, self._upload_timer = self._upload_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        if not data:
            return
        container = detect_container(bytes(data[:16]))
        if container is not None:
            client = await self._recogniser(
                container.value, InputFormat(encoding=container, sample_rate=None)
            )
        else:
            client = await self._recogniser("stream", self.formats.input)
        if client is None:
            return
        await client.control("utterance_start")
        for i in range(0, len(data), _UPLOAD_PIECE):
            await client.send_audio(bytes(data[i : i + _UPLOAD_PIECE]))
        await client.control("utterance_end")

    async def _recogniser(self, key: str, fmt: InputFormat) -> RecognitionClient | None:
        """The recognition session for `key` (the stream, or a container kind), opened at first use."""
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._opening:
            client = self._clients.get(key)
            if client is not None:
                return client
            if time.monotonic() < self._retry_at:
                await self._unavailable("retrying shortly")
                return None
            suffix = "" if key == "stream" else f"-{key}"
            request = SpeechSessionOpen(
                voice_session_id=f"{self.connection_id}{suffix}",
                conversation_id=str(self.conversation_id),
                agent_id=self.agent_id,
                input=fmt,
                stt=self.agent_voice.stt if self.agent_voice else None,
                policy=self.agent_voice.policy if self.agent_voice else None,
                agent_speaking=self.speaking,
            )
            client = RecognitionClient(
                self.nc,
                request,
                self._events_of(request.voice_session_id),
                open_timeout_s=self.settings.gateway_speech_open_timeout_s,
                open_attempts=self.settings.gateway_speech_open_attempts,
            )
            try:
                await client.start()
            except ParleyError as exc:
                self._retry_at = time.monotonic() + self.settings.gateway_speech_retry_s
                self.log.warning("voice.recognition_unavailable", code=exc.code.code)
                await self._unavailable(exc.code.code)
                return None
            self._clients[key] = client
            self.log.info("voice.recognition_open", key=key, worker_id=client.worker_id)
            return client

    async def _unavailable(self, detail: str) -> None:
        now = time.monotonic()
        if now - self._last_unavailable >= 1.0:
            self._last_unavailable = now
            await self._error(Codes.REALTIME_SPEECH_UNAVAILABLE, {"detail": detail})

    # ----------------------------------------------------------------------------- speech events

    def _events_of(self, recogniser: str) -> Callable[[SpeechEvent], Awaitable[None]]:
        async def on_event(event: SpeechEvent) -> None:
            try:
                await self._on_speech(recogniser, event)
            except Exception as exc:  # the socket is gone, or the bus: never kill the client's loop
                self.log.info("voice.event_failed", type=event.type, error=str(exc))

        return on_event

    def _utterance(self, recogniser: str, utterance: int) -> int:
        key = (recogniser, utterance)
        number = self._utterances.get(key)
        if number is None:
            number = len(self._utterances) + 1
            self._utterances[key] = number
        return number

    async def _on_speech(self, recogniser: str, event: SpeechEvent) -> None:
        await self.out.greeted.wait()
        if self.closed:
            return
        if isinstance(event, SpeechStarted):
            utterance = self._utterance(recogniser, event.utterance)
            await self._signal("speech_started", utterance=utterance, at_ms=event.at_ms)
        elif isinstance(event, SpeechStopped):
            utterance = self._utterance(recogniser, event.utterance)
            await self._signal("speech_stopped", utterance=utterance, at_ms=event.at_ms)
        elif isinstance(event, BargeIn):
            await self.interrupt()
            await self._signal("barge_in", utterance=self._utterance(recogniser, event.utterance))
            await self.out.forward(self._input(InputCancel), None)
        elif isinstance(event, Transcript):
            utterance = self._utterance(recogniser, event.utterance)
            text = event.text.strip().replace("\x00", "")
            if not event.final:
                await self._signal("transcript", text=text, final=False, utterance=utterance)
            elif not text:
                await self._signal("no_speech", utterance=utterance)
            else:
                await self._signal(
                    "transcript", text=text, final=True, utterance=utterance, stt_ms=event.stt_ms
                )
                self.answering = True  # a turn follows
                # One turn per utterance, however often it is recognised (idempotent id).
                await self.out.forward(
                    self._input(InputText, text=text), f"voice:{recogniser}:{event.utterance}"
                )
        elif isinstance(event, NoSpeech):
            await self._signal("no_speech", utterance=self._utterance(recogniser, event.utterance))
        elif isinstance(event, SpeechError):
            await self.out.send_frame(ServerError(code=event.error.code, message=event.error.message))

    async def _signal(self, name: str, **data: object) -> None:
        await self.out.send_frame(ServerSignal(name=name, data=dict(data)))

    async def _error(self, code: ErrorCode, params: dict[str, object]) -> None:
        await self.out.send_frame(ServerError(code=code.code, message=envelope(code, params=params).message))

    def _input(self, model: type[BaseModel], **fields: object) -> SessionInput:
        return model(at=datetime.now(UTC), connection_id=self.connection_id, **fields)  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- agent audio

    async def interrupt(self) -> None:
        """Barge-in or `cancel`: stop relaying the agent's audio now, until the turn has ended."""
        if self.answering or self.speaking:
            self.muted = True
        if self._stream is not None:
            self._old_streams.append(self._stream)  # its late chunks never reach the socket
            self._stream, self._seq = None, -1
        await self._set_speaking(False)

    def user_input(self) -> None:
        """The client sent `input_text`: a turn follows."""
        self.answering = True

    async def observe(self, event: ServerEvent) -> None:
        """Each runtime event, after it went to the client."""
        if isinstance(event, ServerTextDelta | ServerTextFull):
            self.answering = True
        elif isinstance(event, ServerTurnComplete | ServerSessionClosed):
            self.answering = False
            self.muted = False
            await self._set_speaking(False)

    async def _set_speaking(self, speaking: bool) -> None:
        if self.speaking == speaking:
            return
        self.speaking = speaking
        client = self._clients.get("stream")
        if client is not None:
            with contextlib.suppress(Exception):
                await client.control("agent_speaking", speaking=speaking)

    async def _on_audio(self, msg: Msg) -> None:
        await self.out.greeted.wait()
        headers = msg.headers or {}
        stream = headers.get(HDR_STREAM, "")
        try:
            seq = int(headers.get(HDR_SEQ, "-1"))
        except ValueError:
            seq = -1
        if self.muted or self.closed or stream in self._old_streams:
            self.dropped += 1
            return
        if stream != self._stream:
            if self._stream is not None:
                self._old_streams.append(self._stream)
            self._stream, self._seq = stream, -1
        if seq <= self._seq:
            self.dropped += 1  # a duplicate
            return
        self._seq = seq
        if not await self.out.send_audio(msg.data):
            return
        self.relayed += 1
        await self._set_speaking(True)

    def is_muted(self) -> bool:
        return self.muted
