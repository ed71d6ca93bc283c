"""One sentence of speech: synthesize, resample, cut into chunks, publish them paced to real time.

Synthesis runs ahead (a producer task; espeak-ng makes seconds of audio in milliseconds) while
publication is paced: chunk `i` goes out `lead_ms` before it is due at the listener
(`playout_at + offset`). So a cancel, which stops publication at once, leaves at most `lead_ms`
plus one chunk of audio in flight: a barge-in silences the agent within ~200 ms.

Each chunk carries the absolute char offset of the text spoken by its end (`Parley-Text-End`):
from the engine's word alignment when it has one (espeak-ng, ElevenLabs), else estimated from the
time (by speaking rate until the sentence's length in time is known, then in proportion), always
at a word's end. After a cancel, the `cancelled` report's `text_end` says exactly how much of the
answer was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import numpy as np
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from parley_common import metrics
from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import (
    HDR_FORMAT,
    HDR_LAST,
    HDR_OFFSET_MS,
    HDR_SEGMENT,
    HDR_SEQ,
    HDR_STREAM,
    HDR_TEXT_END,
    HDR_TEXT_START,
    TtsCancel,
    TtsReport,
    TtsSynthesizeRequest,
)
from parley_common.tasks import cancel_and_wait
from parley_speech import bus
from parley_speech.audio.formats import encode_output
from parley_speech.audio.resample import StreamResampler
from parley_speech.engines.registry import TtsChoice
from parley_speech.telemetry import trace_headers

log = structlog.get_logger(__name__)

# Speaking rate used to place text in time before the sentence's duration is known.
CHARS_PER_SECOND = 14.0


@dataclass
class _Chunk:
    audio: bytes
    offset_ms: int
    duration_ms: int
    text_end: int | None  # local offset (within the sentence), None: not aligned


@dataclass
class _Produced:
    chunks: list[_Chunk] = field(default_factory=list)
    total_ms: int | None = None  # set when synthesis is complete
    error: ParleyError | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def word_end(text: str, pos: int) -> int:
    """`pos` moved forward to the end of the word it falls in."""
    if pos <= 0:
        return 0
    if pos >= len(text):
        return len(text)
    if text[pos - 1].isspace():
        return pos
    nxt = next((i for i in range(pos, len(text)) if text[i].isspace()), len(text))
    return nxt


class TtsJob:
    def __init__(
        self,
        nc: NatsClient,
        request: TtsSynthesizeRequest,
        choice: TtsChoice,
        *,
        worker_id: str,
        chunk_ms: int,
        lead_ms: int,
        heartbeat_s: float,
    ) -> None:
        self.nc, self.request, self.choice = nc, request, choice
        self.worker_id = worker_id
        self.chunk_ms = chunk_ms
        self.lead_ms = request.lead_ms if request.lead_ms is not None else lead_ms
        self.heartbeat_s = heartbeat_s
        self.received = time.monotonic()
        self.cancelled = asyncio.Event()
        self.cancel_reason = ""
        self.produced = _Produced()
        # What was published.
        self.chunks = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.audio_ms = 0
        self.text_end_local = 0
        self.first_chunk_ms: int | None = None
        self.playout_at: float | None = None
        self._sub: Subscription | None = None

    @property
    def next_seq(self) -> int:
        return self.request.start_seq + self.chunks

    async def subscribe_cancel(self) -> None:
        self._sub = await bus.subscribe_cancel(self.nc, self.request.stream_id, self.on_cancel)

    async def on_cancel(self, msg: Msg) -> None:
        try:
            self.cancel_reason = TtsCancel.model_validate_json(msg.data).reason
        except ValueError:
            self.cancel_reason = "cancel"
        self.cancelled.set()

    # --------------------------------------------------------------------------------- running

    async def run(self) -> None:
        producer = asyncio.create_task(self._produce())
        beat = asyncio.create_task(self._heartbeat())
        outcome = "done"
        error: ParleyError | None = None
        try:
            outcome, error = await self._publish()
        except asyncio.CancelledError:
            outcome, error = "error", ParleyError(Codes.SERVICE_UNAVAILABLE)
            raise
        finally:
            beat.cancel()
            await cancel_and_wait(producer)
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self._report(outcome, error=error, shielded=True)

    async def _produce(self) -> None:
        p = self.produced
        engine = self.choice.engine
        text = self.request.text
        fmt = self.request.output
        resampler: StreamResampler | None = None
        pending = np.zeros(0, np.float32)
        per_chunk = fmt.sample_rate * self.chunk_ms // 1000
        emitted = 0  # output samples cut into chunks
        aligned: int | None = None

        def cut(final: bool) -> None:
            nonlocal pending, emitted
            while pending.size >= per_chunk or (final and pending.size):
                piece, pending = pending[:per_chunk], pending[per_chunk:]
                offset = emitted * 1000 // fmt.sample_rate
                emitted += piece.size
                duration = emitted * 1000 // fmt.sample_rate - offset
                p.chunks.append(_Chunk(encode_output(piece, fmt), offset, duration, aligned))
            p.ready.set()

        try:
            audio = engine.synthesize(
                text, voice=self.choice.voice, language=self.choice.language, model=self.choice.model
            )
            async for chunk in audio:
                if resampler is None:
                    resampler = StreamResampler(engine.sample_rate, fmt.sample_rate)
                if chunk.text_end is not None:
                    aligned = max(aligned or 0, min(chunk.text_end, len(text)))
                if chunk.samples.size:
                    pending = np.concatenate([pending, resampler.push(chunk.samples)])
                    cut(False)
            if resampler is not None:
                pending = np.concatenate([pending, resampler.flush()])
            cut(True)
            p.total_ms = emitted * 1000 // fmt.sample_rate
            await self._report("synthesized")
        except ParleyError as exc:
            p.error = exc
            metrics.SPEECH_ERRORS.labels(engine.name, exc.code.code).inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("speech.tts_failed", engine=engine.name)
            p.error = ParleyError(
                Codes.SPEECH_ENGINE_FAILED, params={"engine": engine.name, "detail": type(exc).__name__}
            )
        finally:
            p.ready.set()
            if p.total_ms is None and p.error is None:
                p.error = ParleyError(
                    Codes.SPEECH_ENGINE_FAILED, params={"engine": engine.name, "detail": "stopped"}
                )

    async def _publish(self) -> tuple[str, ParleyError | None]:
        p = self.produced
        req = self.request
        now_wall = time.time()
        self.playout_at = req.playout_at if req.playout_at is not None else now_wall
        index = 0
        while True:
            if self.cancelled.is_set():
                return "cancelled", None
            if index >= len(p.chunks):
                if p.error is not None:
                    return "error", p.error
                if p.total_ms is not None:
                    return "done", None
                p.ready.clear()
                if index >= len(p.chunks) and p.total_ms is None and p.error is None:
                    await self._wait(p.ready.wait())
                continue
            chunk = p.chunks[index]
            if req.realtime:
                due = self.playout_at + (chunk.offset_ms - self.lead_ms) / 1000
                delay = due - time.time()
                if delay > 0:
                    await self._wait(asyncio.sleep(delay))
                    continue  # re-check cancel and the list before publishing
            await self._send(chunk, index == len(p.chunks) - 1 and p.total_ms is not None)
            index += 1

    async def _wait(self, aw: Awaitable[object]) -> None:
        """Wait for `aw`, or less if a cancel comes first."""
        waiter = asyncio.ensure_future(aw)
        cancel = asyncio.ensure_future(self.cancelled.wait())
        try:
            await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (waiter, cancel):
                if not f.done():
                    f.cancel()

    def _text_end(self, chunk: _Chunk) -> int:
        text = self.request.text
        if chunk.text_end is not None:
            local = chunk.text_end
        else:
            end_ms = chunk.offset_ms + chunk.duration_ms
            total = self.produced.total_ms
            estimate = len(text) * end_ms / total if total else end_ms / 1000 * CHARS_PER_SECOND
            local = word_end(text, int(estimate))
        return max(self.text_end_local, min(local, len(text)))

    async def _send(self, chunk: _Chunk, last: bool) -> None:
        req = self.request
        seq = self.next_seq
        start = self.text_end_local
        self.text_end_local = len(req.text) if last else self._text_end(chunk)
        headers = trace_headers(
            {
                HDR_STREAM: req.stream_id,
                HDR_SEGMENT: req.segment_id,
                HDR_SEQ: str(seq),
                HDR_TEXT_START: str(req.text_offset + start),
                HDR_TEXT_END: str(req.text_offset + self.text_end_local),
                HDR_OFFSET_MS: str(chunk.offset_ms),
                HDR_FORMAT: req.output.value,
                HDR_LAST: "1" if last else "0",
            }
        )
        await self.nc.publish(req.audio_subject, chunk.audio, headers=headers)
        if self.first_chunk_ms is None:
            self.first_chunk_ms = int((time.monotonic() - self.received) * 1000)
            metrics.SPEECH_TTS_FIRST_CHUNK_SECONDS.labels(self.choice.engine.name).observe(
                self.first_chunk_ms / 1000
            )
        self.first_seq = seq if self.first_seq is None else self.first_seq
        self.last_seq = seq
        self.chunks += 1
        self.audio_ms = chunk.offset_ms + chunk.duration_ms

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._report("heartbeat")

    async def _report(self, kind: str, *, error: ParleyError | None = None, shielded: bool = False) -> None:
        req = self.request
        report = TtsReport(
            type=kind,
            stream_id=req.stream_id,
            segment_id=req.segment_id,
            worker_id=self.worker_id,
            chunks=self.chunks,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            next_seq=self.next_seq,
            audio_ms=self.audio_ms,
            text_end=req.text_offset + self.text_end_local,
            total_audio_ms=self.produced.total_ms,
            total_chunks=len(self.produced.chunks) if self.produced.total_ms is not None else None,
            playout_at=self.playout_at,
            first_chunk_ms=self.first_chunk_ms,
            error=error.envelope() if error is not None else None,
        )
        data = report.model_dump_json(exclude_none=True).encode()
        publish = self.nc.publish(req.report_subject, data, headers=trace_headers())
        if shielded:
            await asyncio.shield(publish)
        else:
            await publish
        if kind in ("done", "cancelled", "error"):
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=1)
