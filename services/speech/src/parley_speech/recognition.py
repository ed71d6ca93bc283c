# One piece (596 lines): one voice session's pipeline (decode, resample, VAD, policy, STT) shares
# the session's sequence bookkeeping and reads top to bottom as the audio flows.
"""One voice session's recognition on a worker: audio in (core NATS), events out.

    audio subject ─► inbox (bounded) ─► decode → resample (soxr) → VAD (Silero)
        ─► policy (policy.py) ─► STT stream per utterance ─► events subject

CPU work never runs on the event loop: decoding, resampling and VAD run in the worker's VAD
thread pool (one call per chunk), recognition in the STT pool. One session's long recognition
does not hold up another's VAD, and a session keeps listening while its last turn is recognised.

Sequence numbers: a chunk at or below the last one seen is a duplicate (dropped, counted); a jump
is a gap (counted, reported as `audio_gap`, the audio goes on). Transcripts carry the range of
chunks they cover, so an edge knows what it may drop from its replay buffer.

Bounds: a chunk that waited in the inbox longer than `PARLEY_SPEECH_MAX_BACKLOG_MS` means the
worker cannot keep up; more queued audio than an utterance plus that backlog means the edge sends
faster than anything could be processed. Either closes the session with `speech.backlog_exceeded`
(the edge re-opens it elsewhere). A replay (an utterance sent at once after a re-open) fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from parley_common import metrics
from parley_common.errors import Codes, ErrorEnvelope, ParleyError, envelope
from parley_common.speech_contract import (
    HDR_CONTROL,
    HDR_SEQ,
    AudioEncoding,
    AudioGap,
    BargeIn,
    InputFormat,
    NoSpeech,
    SpeechClosed,
    SpeechControl,
    SpeechError,
    SpeechHeartbeat,
    SpeechSessionOpen,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)
from parley_speech import bus
from parley_speech import policy as p
from parley_speech.audio.formats import (
    Samples,
    bad_audio,
    decode_chunk,
    decode_container,
    looks_like_noise_bytes,
)
from parley_speech.audio.resample import StreamResampler, resample
from parley_speech.engines.base import STT_RATE, STTEngine, STTStream
from parley_speech.engines.silero import SileroModel, VadEvent, VadStream
from parley_speech.settings import SpeechSettings
from parley_speech.telemetry import trace_headers

log = structlog.get_logger(__name__)

# While a turn may be ending and the line is quiet, the session looks at the clock this often.
IDLE_TICK_S = 0.05
# Audio that stops arriving mid-turn ends the turn after the policy's silence plus this.
STALL_MARGIN_MS = 1000
# Chunks processed in one hop to the VAD thread, at most (1 s of 20 ms chunks).
BATCH_MAX = 50
# At most one `error` event per this many seconds for bad audio (a stream of garbage is one error).
BAD_AUDIO_ERROR_EVERY_S = 1.0


@dataclass
class _Ring:
    """The last few seconds of 16 kHz audio with the seq of the chunk each piece came from."""

    keep: int  # samples
    pieces: deque[tuple[int, Samples, int]] = field(default_factory=deque)  # (start sample, audio, seq)
    end: int = 0  # sample index just past the newest piece

    def append(self, samples: Samples, seq: int) -> None:
        if samples.size:
            self.pieces.append((self.end, samples, seq))
            self.end += samples.size
        while self.pieces and self.pieces[0][0] + self.pieces[0][1].size < self.end - self.keep:
            self.pieces.popleft()

    def since(self, start: int) -> tuple[Samples, int | None, int | None]:
        """Audio from sample `start` to the end, and the first and last seq it spans."""
        parts, first, last = [], None, None
        for at, samples, seq in self.pieces:
            if at + samples.size <= start:
                continue
            parts.append(samples[max(start - at, 0) :])
            first = seq if first is None else first
            last = seq
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio, first, last


@dataclass
class _Utterance:
    number: int
    stream: STTStream
    fed_to: int  # sample index up to which audio went to the stream
    seq_start: int | None = None
    seq_end: int | None = None


@dataclass
class SessionContext:
    """What every session of a worker shares."""

    nc: NatsClient
    settings: SpeechSettings
    worker_id: str
    vad_model: SileroModel
    vad_executor: Executor
    on_closed: Callable[[RecognitionSession], None]


class RecognitionSession:
    def __init__(
        self,
        ctx: SessionContext,
        request: SpeechSessionOpen,
        *,
        audio_subject: str,
        events_subject: str,
        stt: STTEngine,
        policy_config: p.PolicyConfig,
        vad_threshold: float,
        interim: bool,
    ) -> None:
        self.ctx, self.request = ctx, request
        self.settings = ctx.settings
        self.audio_subject, self.events_subject = audio_subject, events_subject
        self.stt, self.language = stt, request.stt.language if request.stt else None
        self.interim = interim
        self.fmt: InputFormat = request.input
        self.policy = p.TurnPolicy(
            policy_config, next_utterance=request.next_utterance, agent_speaking=request.agent_speaking
        )
        self.vad: VadStream = ctx.vad_model.stream(threshold=vad_threshold)
        self.vad_threshold = vad_threshold
        self.resampler = StreamResampler(self.fmt.sample_rate, STT_RATE) if self.fmt.sample_rate else None
        self.ring = _Ring(keep=(self.settings.speech_preroll_ms + 1500) * STT_RATE // 1000)
        # Audio: (seq, bytes, when queued, duration ms); `_ready` wakes the loop.
        self.inbox: deque[tuple[int, bytes, float, float] | SpeechControl] = deque()
        self._ready = asyncio.Event()
        self.backlog_ms = 0.0
        self.last_seq: int | None = None
        self.duplicates = 0
        self.gaps = 0
        self.n = 0
        self.current: _Utterance | None = None
        self.upload: bytearray | None = None  # explicit utterance (utterance_start … end)
        self.upload_seqs: tuple[int | None, int | None] = (None, None)
        self.upload_failed = False
        self.last_audio = time.monotonic()
        self.last_message = time.monotonic()
        self._last_bad_audio = 0.0
        self._publish_chain: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._runner: asyncio.Task[None] | None = None
        self.closed = False
        self.closing = False

    # ------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._sub = await bus.subscribe_audio(self.ctx.nc, self.audio_subject, self.on_message)
        self._runner = asyncio.create_task(self._run())

    async def close(self, reason: str, *, error: ParleyError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if error is not None:
            await self._emit(SpeechError, error=_env(error), fatal=True)
        if self.current is not None:
            stream, self.current = self.current.stream, None
            self._spawn(stream.aclose())
        await self._emit(SpeechClosed, reason=reason)
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.ctx.on_closed(self)
        log.info("speech.session_closed", voice_session_id=self.request.voice_session_id, reason=reason)

    # ----------------------------------------------------------------------------- bus intake

    async def on_message(self, msg: Msg) -> None:
        """NATS callback: cheap checks only, the work is queued for `_run`."""
        if self.closed or self.closing:
            return
        self.last_message = time.monotonic()
        headers = msg.headers or {}
        if headers.get(HDR_CONTROL):
            try:
                control = SpeechControl.model_validate_json(msg.data)
            except ValidationError as exc:
                detail = exc.errors(include_url=False, include_input=False)[0]["msg"]
                await self._emit(
                    SpeechError, error=envelope(Codes.BUS_BAD_MESSAGE, params={"detail": detail}), fatal=False
                )
                return
            self.inbox.append(control)
            self._ready.set()
            return
        try:
            seq = int(headers.get(HDR_SEQ, ""))
        except ValueError:
            await self._emit(
                SpeechError,
                error=envelope(Codes.BUS_BAD_MESSAGE, params={"detail": f"audio without a {HDR_SEQ} header"}),
                fatal=False,
            )
            return
        if self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.gaps += 1
            await self._emit(AudioGap, from_seq=self.last_seq + 1, to_seq=seq - 1)
        self.last_seq = seq
        self.last_audio = time.monotonic()
        ms = self._duration_ms(len(msg.data))
        self.backlog_ms += ms
        # Memory bound: a replay (a whole utterance at once) fits; more than that does not.
        if self.backlog_ms > self.settings.speech_max_utterance_ms + self.settings.speech_max_backlog_ms:
            self._cut_behind(int(self.backlog_ms))
            return
        self.inbox.append((seq, msg.data, time.monotonic(), ms))
        self._ready.set()

    def _cut_behind(self, backlog_ms: int) -> None:
        error = ParleyError(Codes.SPEECH_BACKLOG_EXCEEDED, params={"backlog_ms": backlog_ms})
        # Not awaited here: closing unsubscribes, which must not happen inside its own callback.
        self.closing = True
        self._spawn(self.close("backlog_exceeded", error=error))

    def _duration_ms(self, size: int) -> float:
        if self.fmt.is_container or self.upload is not None:
            return 0.0  # uploads are bounded by bytes, not time
        width = 2 if self.fmt.encoding is AudioEncoding.PCM16 else 1
        return size / width * 1000 / (self.fmt.sample_rate or STT_RATE)

    # ------------------------------------------------------------------------------- the loop

    async def _run(self) -> None:
        try:
            while not self.closed:
                if not self.inbox:
                    self._ready.clear()
                    try:  # not wait_for: on 3.11 it swallows a cancel that lands as audio wakes it
                        async with asyncio.timeout(IDLE_TICK_S):
                            await self._ready.wait()
                    except TimeoutError:
                        await self._on_idle()
                    continue
                item = self.inbox.popleft()
                if isinstance(item, SpeechControl):
                    await self._on_control(item)
                    continue
                # Consecutive chunks go to the VAD thread together (a replay is a burst): one
                # hop per batch instead of one per 20 ms chunk.
                batch = [item]
                while self.inbox and len(batch) < BATCH_MAX and not isinstance(self.inbox[0], SpeechControl):
                    batch.append(self.inbox.popleft())  # type: ignore[arg-type]
                self.backlog_ms = max(self.backlog_ms - sum(b[3] for b in batch), 0.0)
                # Time bound: audio waiting longer than this means the worker cannot keep up.
                behind_ms = (time.monotonic() - batch[0][2]) * 1000
                if behind_ms > self.settings.speech_max_backlog_ms:
                    self._cut_behind(int(behind_ms))
                    return
                await self._on_audio([(seq, data) for seq, data, _, _ in batch])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("speech.session_failed", voice_session_id=self.request.voice_session_id)
            await self.close(
                "failed",
                error=ParleyError(
                    Codes.SPEECH_ENGINE_FAILED, params={"engine": self.stt.name, "detail": "internal"}
                ),
            )

    async def _on_idle(self) -> None:
        now = time.monotonic()
        if now - self.last_message > self.settings.speech_idle_timeout_s:
            await self.close("idle")
            return
        # The edge stopped sending in the middle of a turn (push-to-talk released, a paused stream):
        # the missing audio counts as silence, after a margin for network jitter (an edge that
        # knows the user is done says `flush`).
        quiet_ms = (now - self.last_audio) * 1000
        if (
            self.policy.in_utterance
            and quiet_ms >= self.policy.config.end_of_turn_silence_ms + STALL_MARGIN_MS
        ):
            await self._handle(self.policy.force_end(self.vad.position_ms))

    async def _on_control(self, control: SpeechControl) -> None:
        if control.type == "close":
            await self.close("client")
        elif control.type == "agent_speaking":
            await self._handle(self.policy.on_agent_speaking(bool(control.speaking), self.vad.position_ms))
        elif control.type == "flush":
            await self._handle(self.policy.force_end(self.vad.position_ms))
        elif control.type == "utterance_start":
            self._begin_upload()
        elif control.type == "utterance_end":
            await self._finish_upload()

    async def _on_audio(self, chunks: list[tuple[int, bytes]]) -> None:
        if self.fmt.is_container and self.upload is None:
            self._begin_upload()  # a container chunk without utterance_start: an upload anyway
        if self.upload is not None:
            for seq, data in chunks:
                self._add_upload(seq, data)
            return
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.ctx.vad_executor, self._process_sync, chunks)
        for seq, result in zip((s for s, _ in chunks), results, strict=True):
            if isinstance(result, ParleyError):
                await self._bad_audio(result)
                continue
            samples, events, position_ms = result
            self.ring.append(samples, seq)
            actions: list[p.Action] = []
            for event in events:
                actions += self.policy.on_vad(event)
            actions += self.policy.on_time(position_ms)
            await self._handle(actions)
            await self._feed()

    def _process_sync(
        self, chunks: list[tuple[int, bytes]]
    ) -> list[tuple[Samples, list[VadEvent], int] | ParleyError]:
        """In the VAD pool: per chunk, bytes → 16 kHz float → VAD events (and the audio position)."""
        out: list[tuple[Samples, list[VadEvent], int] | ParleyError] = []
        for _, data in chunks:
            try:
                samples = decode_chunk(data, self.fmt)
                if self.fmt.encoding is AudioEncoding.PCM16 and looks_like_noise_bytes(samples):
                    raise bad_audio(self.fmt.label, "this is not PCM16 audio (it reads as full-scale noise)")
            except ParleyError as exc:
                out.append(exc)
                continue
            assert self.resampler is not None
            samples = self.resampler.push(samples)
            # The policy's clock: the end of turn falls in the 20 ms chunk where the silence window
            # ends, not up to a 32 ms VAD window later (VadStream.heard_ms says why that is safe).
            out.append((samples, self.vad.push(samples), self.vad.heard_ms))
        return out

    async def _bad_audio(self, exc: ParleyError) -> None:
        now = time.monotonic()
        if now - self._last_bad_audio >= BAD_AUDIO_ERROR_EVERY_S:
            self._last_bad_audio = now
            await self._emit(SpeechError, error=_env(exc), fatal=False)

    # --------------------------------------------------------------------------- policy → STT

    async def _handle(self, actions: list[p.Action]) -> None:
        for action in actions:
            if isinstance(action, p.UtteranceBegan):
                start = max(
                    action.start_ms * STT_RATE // 1000 - self.settings.speech_preroll_ms * STT_RATE // 1000, 0
                )
                stream = self.stt.stream(
                    language=self.language, on_interim=self._interim_callback(action.utterance)
                )
                self.current = _Utterance(action.utterance, stream, start)
                await self._feed()
            elif isinstance(action, p.SpeechConfirmed):
                seq = self.current.seq_start if self.current is not None else None
                await self._emit(SpeechStarted, utterance=action.utterance, at_ms=action.start_ms, seq=seq)
            elif isinstance(action, p.BargeIn):
                await self._emit(BargeIn, utterance=action.utterance, at_ms=action.at_ms)
            elif isinstance(action, p.EndOfTurn):
                utterance, self.current = self.current, None
                seq = utterance.seq_end if utterance is not None else None
                await self._emit(SpeechStopped, utterance=action.utterance, at_ms=action.end_ms, seq=seq)
                if utterance is not None:
                    self._recognize(utterance, time.monotonic())
            elif isinstance(action, p.Discarded) and self.current is not None:
                stream, self.current = self.current.stream, None
                self._spawn(stream.aclose())

    async def _feed(self) -> None:
        """Give the current utterance's stream the audio it has not had yet."""
        u = self.current
        if u is None:
            return
        audio, first, last = self.ring.since(u.fed_to)
        if audio.size == 0:
            return
        u.fed_to = self.ring.end
        u.seq_start = first if u.seq_start is None else u.seq_start
        u.seq_end = last
        try:
            await u.stream.push(audio)
        except ParleyError as exc:
            self.current = None
            self._spawn(u.stream.aclose())
            await self._emit(SpeechError, error=_env(exc), fatal=False, utterance=u.number)

    def _interim_callback(self, utterance: int) -> Callable[[str], None] | None:
        if not self.interim:
            return None

        def on_interim(text: str) -> None:
            self._spawn(
                self._emit(Transcript, utterance=utterance, final=False, text=text, language=self.language)
            )

        return on_interim

    def _recognize(self, u: _Utterance, ended: float) -> None:
        previous = self._publish_chain
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish_chain = done

        async def run() -> None:
            try:
                try:
                    text: str | None = await u.stream.end()
                    failure = None
                except ParleyError as exc:
                    text, failure = None, exc
                stt_ms = int((time.monotonic() - ended) * 1000)
                if failure is None:
                    metrics.SPEECH_STT_SECONDS.labels(self.stt.name).observe(stt_ms / 1000)
                else:
                    metrics.SPEECH_ERRORS.labels(self.stt.name, failure.code.code).inc()
                if previous is not None:
                    await previous  # transcripts go out in utterance order
                if failure is not None:
                    await self._emit(SpeechError, error=_env(failure), fatal=False, utterance=u.number)
                elif text:
                    await self._emit(
                        Transcript,
                        utterance=u.number,
                        final=True,
                        text=text,
                        language=self.language,
                        seq_start=u.seq_start,
                        seq_end=u.seq_end,
                        stt_ms=stt_ms,
                    )
                else:
                    await self._emit(NoSpeech, utterance=u.number)
            finally:
                if not done.done():
                    done.set_result(None)

        self._spawn(run())

    # -------------------------------------------------------------------------------- uploads

    def _begin_upload(self) -> None:
        self.upload = bytearray()
        self.upload_seqs = (None, None)
        self.upload_failed = False

    def _add_upload(self, seq: int, data: bytes) -> None:
        assert self.upload is not None
        if self.upload_failed:
            return
        if len(self.upload) + len(data) > self.settings.speech_max_upload_bytes:
            self.upload_failed = True
            self.upload = bytearray()
            limit = f"{self.settings.speech_max_upload_bytes} bytes"
            self._spawn(
                self._emit(
                    SpeechError,
                    error=_env(
                        ParleyError(Codes.SPEECH_UPLOAD_TOO_LARGE, params={"limit": limit, "what": "size"})
                    ),
                    fatal=False,
                )
            )
            return
        self.upload += data
        first = self.upload_seqs[0] if self.upload_seqs[0] is not None else seq
        self.upload_seqs = (first, seq)

    async def _finish_upload(self) -> None:
        data, self.upload = self.upload, None
        if data is None or self.upload_failed:
            self.upload_failed = False
            return
        loop = asyncio.get_running_loop()
        try:
            audio, has_speech = await loop.run_in_executor(
                self.ctx.vad_executor, self._decode_upload_sync, bytes(data)
            )
        except ParleyError as exc:
            await self._emit(SpeechError, error=_env(exc), fatal=False)
            return
        number = self.policy.next_utterance
        self.policy.next_utterance += 1
        if not has_speech:
            await self._emit(NoSpeech, utterance=number)
            return
        stream = self.stt.stream(language=self.language)
        u = _Utterance(number, stream, 0, *self.upload_seqs)
        try:
            await stream.push(audio)
        except ParleyError as exc:
            await self._emit(SpeechError, error=_env(exc), fatal=False, utterance=number)
            return
        self._recognize(u, time.monotonic())

    def _decode_upload_sync(self, data: bytes) -> tuple[Samples, bool]:
        if self.fmt.is_container:
            samples, rate = decode_container(data, self.fmt)
        else:
            samples, rate = decode_chunk(data, self.fmt), self.fmt.sample_rate or STT_RATE
            if self.fmt.encoding is AudioEncoding.PCM16 and looks_like_noise_bytes(samples):
                raise bad_audio(self.fmt.label, "this is not PCM16 audio (it reads as full-scale noise)")
        limit_ms = self.settings.speech_max_utterance_ms
        if samples.size * 1000 // rate > limit_ms:
            raise ParleyError(
                Codes.SPEECH_UPLOAD_TOO_LARGE, params={"limit": f"{limit_ms} ms", "what": "duration"}
            )
        audio = resample(samples, rate, STT_RATE)
        probs = self.ctx.vad_model.probabilities(audio)
        speech_ms = sum(1 for x in probs if x >= self.vad_threshold) * 32
        return audio, speech_ms >= max(self.policy.config.min_speech_ms, 64)

    # ------------------------------------------------------------------------------- events

    async def heartbeat(self) -> None:
        await self._emit(
            SpeechHeartbeat,
            last_seq=self.last_seq,
            backlog_ms=int(self.backlog_ms),
            duplicates=self.duplicates,
            gaps=self.gaps,
        )

    async def _emit(self, model: type[BaseModel], **fields: object) -> None:
        if self.closed and model is not SpeechClosed and model is not SpeechError:
            return
        self.n += 1
        event = model(
            voice_session_id=self.request.voice_session_id,
            generation=self.request.generation,
            worker_id=self.ctx.worker_id,
            n=self.n,
            **fields,
        )
        with contextlib.suppress(Exception):  # a NATS hiccup: the heartbeat tells the edge
            await self.ctx.nc.publish(
                self.events_subject,
                event.model_dump_json(exclude_none=True).encode(),
                headers=trace_headers(),
            )

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("speech.task_failed", voice_session_id=self.request.voice_session_id)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _env(exc: ParleyError) -> ErrorEnvelope:
    return exc.envelope()
