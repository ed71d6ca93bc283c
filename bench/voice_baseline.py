"""The in-process baseline of `bench.voice`: the voice path's own steps in this process, no platform.

Recognition runs the speech worker's own code (`SpeechService.open_session` → `RecognitionSession`:
decode, VAD thread hop, Silero, the turn policy, whisper) on a loopback bus: a publish on the
session's audio subject calls its subscriber at once, and its events are timed as it emits them.
It is fed the clip the socket session spoke, as the same 20 ms PCM16 frames at the same real-time
pace (sleeping to the wall clock) and at the same phase against the 32 ms VAD windows, after
silence, the microphone staying open with silence afterwards. So endpointing here includes what
the socket figure cannot avoid either: waiting for the audio to arrive, the VAD windows, the
silence window. What this leaves out is what the platform adds: the sockets, the gateway, NATS.

Synthesis also runs the worker's own code (`SpeechService.synthesize` → `TtsJob`: espeak-ng,
resampling to the socket's 24 kHz, 40 ms chunks, publication) on that bus, timed from the request
to the first audio chunk published, for the answer the runtime speaks (`You said: "…".`). The LLM
step is the built-in engine's first delta on the transcript.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from nats.aio.msg import Msg
from pydantic import ValidationError

from parley_common import subjects
from parley_common.speech_contract import (
    HDR_SEQ,
    SpeechEvent,
    SpeechSessionOpen,
    SpeechStopped,
    Transcript,
    TtsCancel,
    TtsSynthesizeRequest,
    parse_speech_event,
)
from parley_runtime.llm import BuiltinProvider, ChatMessage, ChatRequest, TextDelta
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.registry import EngineRegistry
from parley_speech.service import SpeechService
from parley_speech.settings import SpeechSettings

FRAME_MS = 20
SILENCE = b"\x00" * (16000 * FRAME_MS // 1000 * 2)
# Silence before the clip: at least this many frames (the socket's microphone was open long before).
LEAD_FRAMES = 24
# The 20 ms frames against the 32 ms VAD windows repeat every 8 frames (160 ms, 5 windows).
PHASE_FRAMES = 8


class _Sub:
    def __init__(self, bus: Loopback, subject: str) -> None:
        self.bus, self.subject = bus, subject

    async def unsubscribe(self) -> None:
        self.bus.subs.pop(self.subject, None)


class Loopback:
    """Just what a speech worker uses of a NATS client, within this process."""

    def __init__(self) -> None:
        self.subs: dict[str, Callable[[Msg], Awaitable[None]]] = {}
        self.events: list[tuple[float, SpeechEvent]] = []
        self.first: dict[str, float] = {}  # subject → when something was first published on it

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]], **_: Any) -> _Sub:
        self.subs[subject] = cb
        return _Sub(self, subject)

    async def publish(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        cb = self.subs.get(subject)
        if cb is not None:  # audio to the session
            await cb(Msg(cast(Any, self), subject=subject, data=payload, headers=headers))
            return
        now = time.monotonic()
        self.first.setdefault(subject, now)
        try:
            event = parse_speech_event(payload)
        except ValidationError:
            return
        self.events.append((now, event))


@dataclass
class Recognized:
    endpointing: float  # last speech frame sent → the session emits `speech_stopped`
    stt: float  # → it emits the final transcript
    text: str


class InProcess:
    """The speech worker's recognition and synthesis engines in this process (one worker's settings,
    the defaults, as the bench's worker runs with), the built-in LLM."""

    def __init__(self) -> None:
        self.settings = SpeechSettings.model_construct()  # defaults, not this shell's PARLEY_*
        s = self.settings
        self.stt_pool = ThreadPoolExecutor(s.speech_stt_concurrency, thread_name_prefix="stt")
        self.vad_pool = ThreadPoolExecutor(s.speech_vad_threads, thread_name_prefix="vad")
        self.registry = EngineRegistry(s, stt_executor=self.stt_pool, agents=None)
        self.service = SpeechService(s, self.registry, self.vad_pool)
        self.bus = Loopback()
        self.llm = BuiltinProvider(pace_ms=0)

    @property
    def tts(self) -> EspeakTTS:
        assert self.registry.espeak is not None
        return self.registry.espeak

    async def start(self) -> None:
        await self.registry.start()
        await self.service.start(cast(Any, self.bus))

    async def aclose(self) -> None:
        await self.service.stop()
        await self.registry.aclose()
        self.stt_pool.shutdown(wait=False, cancel_futures=True)
        self.vad_pool.shutdown(wait=False, cancel_futures=True)

    async def recognize(self, frames: list[bytes], phase: int, limit_s: float = 60.0) -> Recognized:
        """Speak `frames` (starting `phase` frames into the 8-frame cycle, as on the socket) into a
        fresh recognition session at real-time pace; silence follows until the final transcript."""
        request = SpeechSessionOpen(
            voice_session_id=f"bench-{secrets.token_hex(4)}", conversation_id="bench", agent_id="bench"
        )
        opened = await self.service.open_session(request)
        assert opened.audio_subject is not None
        self.bus.events.clear()
        lead = LEAD_FRAMES + phase % PHASE_FRAMES
        last_speech = lead + len(frames) - 1
        speech_end = stopped = done = None
        text = ""
        started = time.monotonic()
        i = 0
        try:
            while done is None:
                delay = started + i * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() - started > limit_s:
                    raise TimeoutError("no final transcript in the in-process recognition")
                frame = frames[i - lead] if lead <= i <= last_speech else SILENCE
                await self.bus.publish(opened.audio_subject, frame, {HDR_SEQ: str(i)})
                if i == last_speech:
                    speech_end = time.monotonic()
                i += 1
                for at, event in self.bus.events:
                    if isinstance(event, SpeechStopped) and stopped is None:
                        stopped = at
                    elif isinstance(event, Transcript) and event.final:
                        done, text = at, event.text
                self.bus.events.clear()
        finally:
            session = self.service.sessions.get(request.voice_session_id)
            if session is not None:
                await session.close("client")
        assert speech_end is not None and stopped is not None
        return Recognized(stopped - speech_end, done - stopped, text)

    async def llm_first(self, text: str) -> float:
        request = ChatRequest(model="builtin", messages=[ChatMessage(role="user", content=text)])
        started = time.perf_counter()
        async for item in self.llm.stream(request):
            if isinstance(item, TextDelta):
                break
        return time.perf_counter() - started

    async def tts_first(self, text: str, limit_s: float = 10.0) -> float:
        """The request → the first audio chunk published (the job is cancelled there)."""
        stream = f"bench-{secrets.token_hex(4)}"
        request = TtsSynthesizeRequest(
            stream_id=stream,
            text=f'You said: "{text}".',
            audio_subject=f"bench.audio.{stream}",
            report_subject=f"bench.report.{stream}",
        )
        started = time.monotonic()
        await self.service.synthesize(request)
        while request.audio_subject not in self.bus.first:
            if time.monotonic() - started > limit_s:
                raise TimeoutError("no audio from the in-process synthesis")
            await asyncio.sleep(0.0005)
        first = self.bus.first[request.audio_subject] - started
        self.bus.first.clear()
        await self.bus.publish(
            subjects.speech_tts_cancel(stream), TtsCancel(stream_id=stream).model_dump_json().encode()
        )
        return first
