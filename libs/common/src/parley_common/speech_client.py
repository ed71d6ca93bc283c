# One piece (538 lines): the recognition and synthesis clients share one watchdog, retry and replay
# discipline over the same worker protocol; split, each half would reach into the other's internals.
"""Client side of the speech workers, for edges (recognition) and runtimes (synthesis).

`RecognitionClient` is an edge's handle on one voice session:
- `start()` subscribes to the events subject, then opens the session on some worker (retrying
  `speech.worker_busy` and timeouts, which reach other workers of the queue group).
- `send_audio(data)` numbers the chunk and publishes it to the worker's audio subject; it also keeps
  the chunk in a replay buffer until a final transcript covers it (bounded by `replay_limit_ms`:
  the oldest audio goes first).
- A watchdog re-opens the session (generation + 1, on any worker) when the worker is silent for
  `dead_after_s` (three heartbeats) or closes the session itself (shutdown, backlog), and replays
  the buffer, so an utterance in progress is not lost. If no worker takes it, the caller gets a
  `speech.worker_lost` error event and the client keeps trying.
- Events reach `on_event` once: those of older generations are dropped, and `speech_started`,
  `barge_in`, `speech_stopped`, `transcript` (final) and `no_speech` are delivered once per
  utterance even when a replay makes the new worker say them again.

`TtsStream` is a runtime's handle on one spoken answer: `say()` each sentence as the LLM completes
it (back to back, numbered and paced by the workers), `cancel()` on barge-in to learn exactly what
was published, `wait()` for the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ValidationError

from parley_common import subjects
from parley_common.errors import Codes, ErrorEnvelope, ParleyError, envelope, reply_error
from parley_common.reply_inbox import request
from parley_common.speech_contract import (
    HDR_CONTROL,
    HDR_SEQ,
    AudioEncoding,
    BargeIn,
    ControlType,
    NoSpeech,
    OutputFormat,
    SpeechClosed,
    SpeechControl,
    SpeechError,
    SpeechEvent,
    SpeechSessionOpen,
    SpeechSessionOpened,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TtsAccepted,
    TtsCancel,
    TtsReport,
    TtsSynthesizeRequest,
    VoiceEngineConfig,
    parse_speech_event,
)

log = structlog.get_logger(__name__)

EventCallback = Callable[[SpeechEvent], Awaitable[None]]
# Events delivered at most once per utterance (a replay makes a new worker repeat them).
_ONCE = (SpeechStarted, BargeIn, SpeechStopped, NoSpeech)


def _raise_reply_error(error: ErrorEnvelope | None, subject: str) -> None:
    if error is None:
        raise ParleyError(Codes.INTERNAL, f"{subject} failed")
    raise reply_error(error, Codes.INTERNAL)


async def _request(nc: NatsClient, subject: str, payload: BaseModel, timeout: float) -> bytes:  # noqa: ASYNC109
    try:
        msg = await request(
            nc, subject, payload.model_dump_json(exclude_none=True).encode(), timeout_s=timeout
        )
    except (NatsTimeoutError, NoRespondersError, TimeoutError) as exc:
        raise ParleyError(Codes.BUS_TIMEOUT, params={"subject": subject}) from exc
    return msg.data


@dataclass
class _Buffered:
    index: int  # order of arrival
    seq: int | None  # None: a control message
    data: bytes
    ms: float


class RecognitionClient:
    def __init__(
        self,
        nc: NatsClient,
        request: SpeechSessionOpen,
        on_event: EventCallback,
        *,
        replay_limit_ms: int = 30_000,
        open_timeout_s: float = 2.0,
        open_attempts: int = 4,
        dead_after_s: float | None = None,
    ) -> None:
        self.nc = nc
        self.template = request
        self.on_event = on_event
        self.replay_limit_ms = replay_limit_ms
        self.open_timeout_s = open_timeout_s
        self.open_attempts = open_attempts
        self.dead_after_s = dead_after_s
        self.events_subject = request.events_subject or subjects.session_speech(request.conversation_id)
        self.generation = request.generation - 1
        self.worker_id: str | None = None
        self.audio_subject: str | None = None
        self.next_seq = 0
        self.agent_speaking = request.agent_speaking
        self.last_final = request.next_utterance - 1
        self.reopens = 0
        self._buffer: deque[_Buffered] = deque()
        self._appended = 0
        self._buffered_ms = 0.0
        self._delivered: set[tuple[str, int]] = set()
        self._last_heard = time.monotonic()
        self._needs_reopen = False
        self._dormant = False
        self._sub: Subscription | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lost_reported = False
        self._lock = asyncio.Lock()
        self.closed = False

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> SpeechSessionOpened:
        self._sub = await self.nc.subscribe(self.events_subject, cb=self._on_message)
        try:
            opened = await self._open()
        except ParleyError:
            await self._sub.unsubscribe()
            raise
        self._needs_reopen = False
        self._watchdog = asyncio.create_task(self._watch())
        return opened

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.audio_subject is not None:
            with contextlib.suppress(Exception):
                await self._publish_control(SpeechControl(type="close"), buffer=False)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _open(self) -> SpeechSessionOpened:
        """Open (or re-open) on any worker; busy or silent workers are retried."""
        last: ParleyError | None = None
        for attempt in range(self.open_attempts):
            self.generation += 1
            request = self.template.model_copy(
                update={
                    "generation": self.generation,
                    "agent_speaking": self.agent_speaking,
                    "next_utterance": self.last_final + 1,
                    "events_subject": self.events_subject,
                }
            )
            try:
                data = await _request(self.nc, subjects.SPEECH_SESSION_OPEN, request, self.open_timeout_s)
                reply = SpeechSessionOpened.model_validate_json(data)
                if not reply.ok or reply.audio_subject is None:
                    _raise_reply_error(reply.error, subjects.SPEECH_SESSION_OPEN)
            except ParleyError as exc:
                last = exc
                if exc.code not in (Codes.SPEECH_WORKER_BUSY, Codes.BUS_TIMEOUT):
                    raise
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
                continue
            self.worker_id, self.audio_subject = reply.worker_id, reply.audio_subject
            if self.dead_after_s is None:
                self.dead_after_s = 3 * (reply.heartbeat_s or 1.0)
            self._last_heard = time.monotonic()
            return reply
        assert last is not None
        raise last

    # ------------------------------------------------------------------------------------ audio

    async def send_audio(self, data: bytes) -> int:
        """Publish one chunk; returns its sequence number."""
        self._wake()
        seq = self.next_seq
        self.next_seq += 1
        self._keep(seq, data, self._ms(len(data)))
        if self.audio_subject is not None and not self._needs_reopen:
            with contextlib.suppress(Exception):  # a lost chunk is replayed by the re-open
                await self.nc.publish(self.audio_subject, data, headers={HDR_SEQ: str(seq)})
        return seq

    async def control(self, type_: ControlType, *, speaking: bool | None = None) -> None:
        control = SpeechControl(type=type_, speaking=speaking)
        if control.type == "agent_speaking":
            self.agent_speaking = bool(speaking)
        await self._publish_control(
            control, buffer=control.type in ("utterance_start", "utterance_end", "flush")
        )

    def _wake(self) -> None:
        if self._dormant:
            self._dormant = False
            self._needs_reopen = True  # buffered meanwhile; the watchdog re-opens within 0.2 s

    async def _publish_control(self, control: SpeechControl, *, buffer: bool) -> None:
        if control.type != "close":
            self._wake()
        data = control.model_dump_json(exclude_none=True).encode()
        if buffer:
            self._keep(None, data, 0.0)
        if self.audio_subject is not None and not self._needs_reopen:
            with contextlib.suppress(Exception):
                await self.nc.publish(self.audio_subject, data, headers={HDR_CONTROL: "1"})

    def _ms(self, size: int) -> float:
        fmt = self.template.input
        if fmt.sample_rate is None:  # containers: replayed whole, bounded by the worker's upload limit
            return 0.0
        width = 2 if fmt.encoding is AudioEncoding.PCM16 else 1
        return size / width * 1000 / fmt.sample_rate

    def _keep(self, seq: int | None, data: bytes, ms: float) -> None:
        item = _Buffered(self._appended, seq, data, ms)
        self._appended += 1
        self._buffer.append(item)
        self._buffered_ms += item.ms
        while self._buffered_ms > self.replay_limit_ms and self._buffer:
            self._buffered_ms -= self._buffer.popleft().ms

    def _drop_through(self, seq_end: int) -> None:
        while self._buffer and (self._buffer[0].seq is None or self._buffer[0].seq <= seq_end):
            self._buffered_ms -= self._buffer.popleft().ms
        if not self._buffer:
            self._buffered_ms = 0.0

    @property
    def buffered_ms(self) -> float:
        return self._buffered_ms

    # ----------------------------------------------------------------------------------- events

    async def _on_message(self, msg: Msg) -> None:
        try:
            event = parse_speech_event(msg.data)
        except ValidationError:
            log.warning("speech.bad_event", subject=msg.subject)
            return
        if event.voice_session_id != self.template.voice_session_id or event.generation != self.generation:
            return  # another session on a shared subject, or a worker we left
        self._last_heard = time.monotonic()
        if isinstance(event, SpeechClosed):
            if event.reason == "idle":
                self._dormant = True  # re-opened when the edge sends something again
            elif event.reason != "client" and not self.closed:
                self._needs_reopen = True  # shutdown, backlog: carry on elsewhere
            return
        if isinstance(event, SpeechError) and event.fatal:
            await self.on_event(event)
            self._needs_reopen = True
            return
        if isinstance(event, _ONCE) or (isinstance(event, Transcript) and event.final):
            utterance = event.utterance
            key = (event.type, utterance)
            if key in self._delivered or utterance <= self.last_final:
                return
            self._delivered.add(key)
            if isinstance(event, Transcript | NoSpeech):
                self.last_final = max(self.last_final, utterance)
                self._delivered = {k for k in self._delivered if k[1] > self.last_final}
                if isinstance(event, Transcript) and event.seq_end is not None:
                    self._drop_through(event.seq_end)
        await self.on_event(event)

    async def _watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(0.2)
            silent = not self._dormant and time.monotonic() - self._last_heard > (self.dead_after_s or 3.0)
            if not (silent or self._needs_reopen):
                continue
            async with self._lock:
                await self._reopen()

    async def _reopen(self) -> None:
        self._needs_reopen = True
        old = self.worker_id
        try:
            await self._open()
        except ParleyError as exc:
            log.warning(
                "speech.reopen_failed", voice_session_id=self.template.voice_session_id, code=exc.code.code
            )
            if not self._lost_reported:
                self._lost_reported = True
                await self.on_event(
                    SpeechError(
                        voice_session_id=self.template.voice_session_id,
                        generation=self.generation,
                        worker_id=old or "",
                        n=0,
                        error=envelope(Codes.SPEECH_WORKER_LOST),
                        fatal=True,
                    )
                )
            self._last_heard = time.monotonic()  # try again after another dead_after_s
            return
        self.reopens += 1
        self._lost_reported = False
        log.info(
            "speech.reopened", voice_session_id=self.template.voice_session_id, old=old, new=self.worker_id
        )
        assert self.audio_subject is not None
        # Replay everything kept, including what `send_audio` adds meanwhile (it only buffers
        # while a re-open is under way), then let it publish again: the order is kept.
        next_index = self._buffer[0].index if self._buffer else self._appended
        while True:
            items = [b for b in self._buffer if b.index >= next_index]
            if not items:
                break
            for item in items:
                headers = {HDR_SEQ: str(item.seq)} if item.seq is not None else {HDR_CONTROL: "1"}
                await self.nc.publish(self.audio_subject, item.data, headers=headers)
            next_index = items[-1].index + 1
        self._needs_reopen = False


# ----------------------------------------------------------------------------------- synthesis


@dataclass
class _Segment:
    segment_id: str
    start_seq: int
    text_offset: int
    text: str
    synthesized: asyncio.Future[TtsReport]
    finished: asyncio.Future[TtsReport]
    last_heard: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class TtsSummary:
    """What a stream published: chunks `start_seq … last_seq`, text `answer[:text_end]`."""

    chunks: int
    last_seq: int | None
    next_seq: int
    text_end: int
    audio_ms: int
    cancelled: bool
    error: ErrorEnvelope | None = None


class TtsStream:
    """One spoken answer: sentences in, audio chunks on `audio_subject`, back to back."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream_id: str,
        audio_subject: str,
        output: OutputFormat = OutputFormat.PCM16_24000,
        tts: VoiceEngineConfig | None = None,
        agent_id: str | None = None,
        conversation_id: str | None = None,
        start_seq: int = 0,
        lead_ms: int | None = None,
        request_timeout_s: float = 2.0,
        dead_after_s: float = 3.0,
    ) -> None:
        self.nc, self.stream_id, self.audio_subject = nc, stream_id, audio_subject
        self.output, self.tts, self.agent_id, self.conversation_id = output, tts, agent_id, conversation_id
        self.next_seq = start_seq
        self.lead_ms = lead_ms
        self.request_timeout_s = request_timeout_s
        self.dead_after_s = dead_after_s
        self.report_subject = nc.new_inbox()
        self.segments: dict[str, _Segment] = {}
        self._order: list[str] = []
        self._playout_end: float | None = None
        self._sub: Subscription | None = None
        self.cancelled = False
        self.reports: list[TtsReport] = []

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.report_subject, cb=self._on_report)

    async def aclose(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def say(self, text: str, *, text_offset: int = 0) -> None:
        """Speak `text` after what was said before. Waits until the previous sentence is
        synthesized (milliseconds with espeak-ng): its length places this one in time."""
        if self.cancelled:
            return
        previous = self.segments[self._order[-1]] if self._order else None
        if previous is not None:
            report = await self._await(previous, previous.synthesized)
            if report is None or self.cancelled:
                return
            self.next_seq = previous.start_seq + (report.total_chunks or 0)
            base = report.playout_at or time.time()
            self._playout_end = base + (report.total_audio_ms or 0) / 1000
        loop = asyncio.get_running_loop()
        segment = _Segment(
            str(len(self._order)),
            self.next_seq,
            text_offset,
            text,
            loop.create_future(),
            loop.create_future(),
        )
        self.segments[segment.segment_id] = segment
        self._order.append(segment.segment_id)
        request = TtsSynthesizeRequest(
            stream_id=self.stream_id,
            segment_id=segment.segment_id,
            text=text,
            text_offset=text_offset,
            conversation_id=self.conversation_id,
            agent_id=self.agent_id,
            tts=self.tts,
            output=self.output,
            audio_subject=self.audio_subject,
            report_subject=self.report_subject,
            start_seq=segment.start_seq,
            # Not in the past: a sentence that comes late starts now, not "caught up".
            playout_at=max(self._playout_end, time.time()) if self._playout_end is not None else None,
            lead_ms=self.lead_ms,
        )
        data = await _request(self.nc, subjects.SPEECH_TTS_SYNTHESIZE, request, self.request_timeout_s)
        accepted = TtsAccepted.model_validate_json(data)
        if not accepted.ok:
            self._fail(segment, accepted.error)
            _raise_reply_error(accepted.error, subjects.SPEECH_TTS_SYNTHESIZE)

    async def cancel(self, reason: str = "barge_in", *, timeout: float = 1.0) -> TtsSummary:  # noqa: ASYNC109
        """Stop now; returns what was published (the workers' `cancelled` / `done` reports)."""
        self.cancelled = True
        await self.nc.publish(
            subjects.speech_tts_cancel(self.stream_id),
            TtsCancel(stream_id=self.stream_id, reason=reason).model_dump_json().encode(),
        )
        pending = [s.finished for s in self.segments.values() if not s.finished.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return self.summary(cancelled=True)

    async def wait(self, *, timeout: float | None = None) -> TtsSummary:  # noqa: ASYNC109
        """Until every sentence said so far is published (or failed, or the worker went silent)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for segment_id in list(self._order):
            segment = self.segments[segment_id]
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            await self._await(segment, segment.finished, remaining)
        return self.summary(cancelled=self.cancelled)

    def summary(self, *, cancelled: bool) -> TtsSummary:
        finished = [s.finished.result() for s in self.segments.values() if s.finished.done()]
        published = [r for r in finished if r.chunks]
        last = max(published, key=lambda r: r.last_seq or -1) if published else None
        errors = [r.error for r in finished if r.error is not None]
        return TtsSummary(
            chunks=sum(r.chunks for r in finished),
            last_seq=last.last_seq if last else None,
            next_seq=last.next_seq if last else self.next_seq,
            text_end=last.text_end if last else (finished[0].text_end if finished else 0),
            audio_ms=sum(r.audio_ms for r in finished),
            cancelled=cancelled,
            error=errors[0] if errors else None,
        )

    async def _await(
        self, segment: _Segment, future: asyncio.Future[TtsReport], limit_s: float | None = None
    ) -> TtsReport | None:
        """The future's report, or None if the worker went silent (a heartbeat comes every
        second while a job lives) or the timeout passed."""
        started = time.monotonic()
        while not future.done():
            if limit_s is not None and time.monotonic() - started > limit_s:
                return None
            if time.monotonic() - segment.last_heard > self.dead_after_s:
                self._fail(segment, envelope(Codes.SPEECH_WORKER_LOST))
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await asyncio.shield(future)
        return future.result() if future.done() else None

    def _fail(self, segment: _Segment, error: ErrorEnvelope | None) -> None:
        report = TtsReport(
            type="error",
            stream_id=self.stream_id,
            segment_id=segment.segment_id,
            worker_id="",
            next_seq=segment.start_seq,
            text_end=segment.text_offset,
            error=error,
        )
        for future in (segment.synthesized, segment.finished):
            if not future.done():
                future.set_result(report)

    async def _on_report(self, msg: Msg) -> None:
        try:
            report = TtsReport.model_validate_json(msg.data)
        except ValidationError:
            return
        segment = self.segments.get(report.segment_id)
        if segment is None or report.stream_id != self.stream_id:
            return
        segment.last_heard = time.monotonic()
        self.reports.append(report)
        if report.type == "synthesized" and not segment.synthesized.done():
            segment.synthesized.set_result(report)
        elif report.type in ("done", "cancelled", "error"):
            if not segment.synthesized.done():
                segment.synthesized.set_result(report)
            if not segment.finished.done():
                segment.finished.set_result(report)
