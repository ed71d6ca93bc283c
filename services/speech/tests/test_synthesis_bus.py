"""Synthesis over the real bus: paced chunks, cancel within 200 ms with an exact account of what
was published, sentences back to back, output formats, and the audio transcribed back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.errors import Codes, ParleyError
from parley_common.sentences import split_text
from parley_common.speech_client import TtsStream
from parley_common.speech_contract import (
    HDR_LAST,
    HDR_SEQ,
    HDR_TEXT_END,
    HDR_TEXT_START,
    OutputFormat,
    TtsAccepted,
    TtsSynthesizeRequest,
    VoiceEngineConfig,
)
from parley_devstack.testing import Infra
from parley_speech.app import build_app
from parley_speech.audio.formats import mulaw_decode, pcm16_to_float
from parley_speech.engines.whisper import WhisperSTT
from parley_speech.settings import SpeechSettings

from .conftest import words

ANSWER = (
    "The weather in Paris is mild today, with a light breeze from the west. "
    "Tomorrow will be warmer, and the sun should shine all afternoon. "
    "Take a light jacket for the evening."
)


@dataclass
class Received:
    chunks: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)

    async def on(self, msg: Msg) -> None:
        self.chunks.append((time.monotonic(), dict(msg.headers or {}), msg.data))

    def seqs(self) -> list[int]:
        return [int(h[HDR_SEQ]) for _, h, _ in self.chunks]


@pytest.fixture(scope="module")
async def worker(infra: Infra) -> AsyncIterator[FastAPI]:
    settings = SpeechSettings(nats_url=infra.nats_url, speech_heartbeat_s=0.5, speech_tts_lead_ms=100)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def listen(nc: NatsClient) -> tuple[str, Received]:
    subject = f"test.audio.{uuid.uuid4().hex}"
    received = Received()
    await nc.subscribe(subject, cb=received.on)
    return subject, received


async def test_chunks_are_paced_to_real_time_and_cancel_stops_them_at_once(nc: NatsClient) -> None:
    subject, received = await listen(nc)
    tts = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject)
    await tts.start()
    started = time.monotonic()
    await tts.say(ANSWER)
    while not received.chunks or time.monotonic() - started < 1.2:
        await asyncio.sleep(0.01)
    cancelled_at = time.monotonic()
    summary = await tts.cancel()
    await asyncio.sleep(0.5)  # anything still coming would arrive by now

    # First audio fast, then real time: by wall time t, at most t + lead + one chunk was sent.
    first_at = received.chunks[0][0]
    assert first_at - started < 0.25
    for at, headers, _ in received.chunks:
        offset_ms = int(headers["Parley-Offset-Ms"])
        assert offset_ms / 1000 <= (at - first_at) + 0.1 + 0.04 + 0.05
    # Nothing after the cancel beyond what was in flight (ms, not the rest of the answer).
    late = [at for at, _, _ in received.chunks if at > cancelled_at + 0.2]
    assert late == []
    assert received.chunks[-1][0] - cancelled_at < 0.2
    # The summary is exactly what was published: count, last seq, text.
    assert summary.cancelled and summary.chunks == len(received.chunks)
    assert summary.last_seq == received.seqs()[-1] and received.seqs() == list(range(len(received.chunks)))
    assert 0 < summary.text_end < len(ANSWER)
    assert summary.text_end == int(received.chunks[-1][1][HDR_TEXT_END])
    assert ANSWER[summary.text_end - 1].isalnum() or ANSWER[summary.text_end - 1] in ".,"  # a word's end
    assert 900 <= summary.audio_ms <= 1600
    # Text ranges tile the text: each chunk starts where the previous ended.
    starts = [int(h[HDR_TEXT_START]) for _, h, _ in received.chunks]
    ends = [int(h[HDR_TEXT_END]) for _, h, _ in received.chunks]
    assert starts[1:] == ends[:-1] and ends == sorted(ends)
    await tts.aclose()


async def test_sentences_play_back_to_back_and_transcribe_back(nc: NatsClient, whisper: WhisperSTT) -> None:
    subject, received = await listen(nc)
    tts = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject, output=OutputFormat.PCM16_16000)
    await tts.start()
    sentences = split_text(ANSWER)
    assert len(sentences) == 3
    started = time.monotonic()
    for sentence in sentences:
        await tts.say(sentence.text, text_offset=sentence.start)
    summary = await tts.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert not summary.cancelled and summary.error is None
    assert received.seqs() == list(range(summary.chunks))  # one sequence across sentences
    assert summary.text_end == sentences[-1].end
    last = [h for _, h, _ in received.chunks if h[HDR_LAST] == "1"]
    assert len(last) == 3  # each sentence marks its last chunk
    audio = pcm16_to_float(b"".join(data for _, _, data in received.chunks))
    duration = audio.size / 16000
    # Paced: the whole answer took about its own length to publish, no gaps between sentences.
    assert duration - 0.3 <= elapsed <= duration + 1.0
    text = await whisper.recognize(audio)
    assert {"paris", "tomorrow", "jacket"} <= words(text), text
    await tts.aclose()


async def test_mulaw_output_and_unpaced_jobs(nc: NatsClient) -> None:
    subject, received = await listen(nc)
    tts = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject, output=OutputFormat.MULAW_8000)
    await tts.start()
    await tts.say("Press one for sales.")
    summary = await tts.wait(timeout=10)
    sizes = [len(data) for _, _, data in received.chunks]
    assert all(size == 320 for size in sizes[:-1])  # 40 ms of 8 kHz, one byte a sample
    audio = mulaw_decode(b"".join(d for _, _, d in received.chunks))
    assert abs(audio.size / 8000 * 1000 - summary.audio_ms) < 50
    assert np.abs(audio).max() > 1000  # not silence
    await tts.aclose()

    # realtime=False publishes as fast as it synthesizes (files, batch work).
    subject, received = await listen(nc)
    report_subject = nc.new_inbox()
    reports: list[bytes] = []

    async def on_report(msg: Msg) -> None:
        reports.append(msg.data)

    await nc.subscribe(report_subject, cb=on_report)
    request = TtsSynthesizeRequest(
        stream_id="fast", text=ANSWER, audio_subject=subject, report_subject=report_subject, realtime=False
    )
    started = time.monotonic()
    reply = TtsAccepted.model_validate_json(
        (await nc.request(subjects.SPEECH_TTS_SYNTHESIZE, request.model_dump_json().encode(), timeout=5)).data
    )
    assert reply.ok
    while not any(b'"done"' in r for r in reports):
        await asyncio.sleep(0.01)
        assert time.monotonic() - started < 5
    assert time.monotonic() - started < 2  # ~10 s of audio in far less than 10 s


async def test_refusals(nc: NatsClient, worker: FastAPI) -> None:
    subject, _ = await listen(nc)
    for tts_config, code in (
        (VoiceEngineConfig(engine="klingon"), Codes.SPEECH_UNKNOWN_ENGINE),
        (VoiceEngineConfig(engine="whisper"), Codes.SPEECH_UNKNOWN_ENGINE),  # an STT engine
        (VoiceEngineConfig(engine="elevenlabs"), Codes.SPEECH_KEY_MISSING),
    ):
        tts = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject, tts=tts_config)
        await tts.start()
        with pytest.raises(ParleyError) as err:
            await tts.say("Hello.")
        assert err.value.code is code
        await tts.aclose()
    limit = worker.state.service.settings.speech_tts_max_chars
    tts = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject)
    await tts.start()
    with pytest.raises(ParleyError) as err:
        await tts.say("x" * (limit + 1))
    assert err.value.code is Codes.SPEECH_TEXT_TOO_LONG
    await tts.aclose()


async def test_an_unknown_espeak_voice_is_an_error_report_not_a_crash(nc: NatsClient) -> None:
    subject, received = await listen(nc)
    tts = TtsStream(
        nc,
        stream_id=uuid.uuid4().hex,
        audio_subject=subject,
        tts=VoiceEngineConfig(engine="espeak", voice="nope-xx"),
    )
    await tts.start()
    await tts.say("Hello.")
    summary = await tts.wait(timeout=5)
    assert summary.error is not None and summary.error.code == Codes.SPEECH_ENGINE_REJECTED.code
    assert received.chunks == []
    # The engine still speaks for the next request.
    tts2 = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject)
    await tts2.start()
    await tts2.say("Hello.")
    assert (await tts2.wait(timeout=5)).chunks > 0
    await tts.aclose()
    await tts2.aclose()
