"""A speech worker's state: its voice sessions and synthesis jobs, their limits and heartbeats."""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import structlog
from nats.aio.client import Client as NatsClient

from parley_common import metrics, subjects
from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import (
    SpeechSessionOpen,
    SpeechSessionOpened,
    TtsAccepted,
    TtsSynthesizeRequest,
)
from parley_common.tasks import cancel_and_wait
from parley_speech.engines.registry import EngineRegistry
from parley_speech.policy import PolicyConfig
from parley_speech.recognition import RecognitionSession, SessionContext
from parley_speech.settings import SpeechSettings
from parley_speech.synthesis import TtsJob

log = structlog.get_logger(__name__)


def new_worker_id() -> str:
    # A subject token: letters, digits, dashes.
    return f"w{os.getpid()}-{secrets.token_hex(4)}"


class SpeechService:
    def __init__(
        self, settings: SpeechSettings, registry: EngineRegistry, vad_executor: ThreadPoolExecutor
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.vad_executor = vad_executor
        self.worker_id = new_worker_id()
        self.sessions: dict[str, RecognitionSession] = {}
        self.jobs: set[asyncio.Task[None]] = set()
        self.nc: NatsClient | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self, nc: NatsClient) -> None:
        self.nc = nc
        self._heartbeat = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Close every session ("shutdown": its edge re-opens it on another worker at once) and
        stop every job (its requester sees an `error` report)."""
        self.stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for session in list(self.sessions.values()):
            await session.close("shutdown")
        await cancel_and_wait(*self.jobs)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.speech_heartbeat_s)
            for session in list(self.sessions.values()):
                await session.heartbeat()

    # ----------------------------------------------------------------------------- recognition

    async def open_session(self, request: SpeechSessionOpen) -> SpeechSessionOpened:
        assert self.nc is not None and self.registry.silero is not None
        s = self.settings
        if self.stopping or len(self.sessions) >= s.speech_max_sessions:
            raise ParleyError(Codes.SPEECH_WORKER_BUSY, params={"limit": s.speech_max_sessions})
        stt = await self.registry.stt(request.stt, request.agent_id)
        overrides = request.policy
        config = PolicyConfig(
            end_of_turn_silence_ms=s.speech_end_of_turn_silence_ms,
            min_speech_ms=s.speech_min_speech_ms,
            echo_warmup_ms=s.speech_echo_warmup_ms,
            barge_in_min_speech_ms=s.speech_barge_in_min_speech_ms,
            allow_interruptions=True,
            max_utterance_ms=s.speech_max_utterance_ms,
        ).with_overrides(overrides)
        threshold = (overrides.vad_threshold if overrides else None) or s.speech_vad_threshold
        interim = overrides.interim_results if overrides and overrides.interim_results is not None else None
        audio_subject = subjects.speech_audio(self.worker_id, secrets.token_hex(8))
        ctx = SessionContext(
            nc=self.nc,
            settings=s,
            worker_id=self.worker_id,
            vad_model=self.registry.silero,
            vad_executor=self.vad_executor,
            on_closed=self._forget,
        )
        session = RecognitionSession(
            ctx,
            request,
            audio_subject=audio_subject,
            events_subject=request.events_subject or subjects.session_speech(request.conversation_id),
            stt=stt,
            policy_config=config,
            vad_threshold=threshold,
            interim=s.speech_interim_results if interim is None else interim,
        )
        # A re-open replaces this worker's own earlier session of the same voice session.
        old = self.sessions.pop(request.voice_session_id, None)
        if old is not None:
            await old.close("reopened")
        self.sessions[request.voice_session_id] = session
        metrics.SPEECH_SESSIONS_ACTIVE.set(len(self.sessions))
        await session.start()
        log.info(
            "speech.session_opened",
            voice_session_id=request.voice_session_id,
            conversation_id=request.conversation_id,
            generation=request.generation,
            engine=stt.name,
            input=request.input.label,
        )
        return SpeechSessionOpened(
            ok=True, worker_id=self.worker_id, audio_subject=audio_subject, heartbeat_s=s.speech_heartbeat_s
        )

    def _forget(self, session: RecognitionSession) -> None:
        if self.sessions.get(session.request.voice_session_id) is session:
            del self.sessions[session.request.voice_session_id]
        metrics.SPEECH_SESSIONS_ACTIVE.set(len(self.sessions))

    # ------------------------------------------------------------------------------- synthesis

    async def synthesize(self, request: TtsSynthesizeRequest) -> TtsAccepted:
        assert self.nc is not None
        s = self.settings
        if self.stopping or len(self.jobs) >= s.speech_max_tts_jobs:
            raise ParleyError(Codes.SPEECH_WORKER_BUSY, params={"limit": s.speech_max_tts_jobs})
        if len(request.text) > s.speech_tts_max_chars:
            raise ParleyError(
                Codes.SPEECH_TEXT_TOO_LONG,
                params={"length": len(request.text), "limit": s.speech_tts_max_chars},
            )
        choice = await self.registry.tts(request.tts, request.agent_id)
        job = TtsJob(
            self.nc,
            request,
            choice,
            worker_id=self.worker_id,
            chunk_ms=s.speech_tts_chunk_ms,
            lead_ms=s.speech_tts_lead_ms,
            heartbeat_s=s.speech_heartbeat_s,
        )
        # Listening for a cancel before the reply: a cancel sent right after it is never missed.
        await job.subscribe_cancel()
        task = asyncio.create_task(job.run())
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        return TtsAccepted(ok=True, worker_id=self.worker_id)
