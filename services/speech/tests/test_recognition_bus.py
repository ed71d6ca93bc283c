"""Recognition over the real bus: a speech worker (in-process app, real NATS) and an edge using
`RecognitionClient`, streaming speech made by espeak-ng at real-time pace in 20 ms frames."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import nats
import numpy as np
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.errors import Codes, ParleyError
from parley_common.speech_client import RecognitionClient
from parley_common.speech_contract import (
    HDR_SEQ,
    InputFormat,
    SpeechHeartbeat,
    SpeechSessionOpened,
    Transcript,
    VoiceEngineConfig,
)
from parley_devstack.testing import Infra
from parley_speech import recognition
from parley_speech.app import build_app
from parley_speech.audio.formats import encode_webm_opus, float_to_pcm16
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.settings import SpeechSettings

from .conftest import speak, words
from .support import Events, frames, open_request, stream, with_silence

QUESTION = "What is the weather like in Paris today?"
QUESTION_WORDS = {"weather", "paris", "today"}


@pytest.fixture(scope="module")
async def worker(infra: Infra) -> AsyncIterator[FastAPI]:
    app = build_app(SpeechSettings(nats_url=infra.nats_url, speech_heartbeat_s=0.5, speech_idle_timeout_s=30))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def question(espeak: EspeakTTS) -> np.ndarray:
    return with_silence(await speak(espeak, QUESTION), 16000, 0.5, 1.0)


async def test_streamed_pcm16_gives_turn_events_and_a_final_transcript(
    nc: NatsClient, question: np.ndarray
) -> None:
    events = Events()
    client = RecognitionClient(nc, open_request(), events)
    opened = await client.start()
    assert opened.ok and opened.audio_subject and opened.audio_subject.startswith("speech.audio.")
    chunks = frames(question, InputFormat())
    await stream(client, chunks)
    await events.wait_for(lambda: events.of("transcript"))
    kinds = [e.type for e in events.items if e.type not in ("heartbeat",)]
    assert kinds == ["speech_started", "speech_stopped", "transcript"], kinds
    started, stopped, final = (events.of(k)[0] for k in ("speech_started", "speech_stopped", "transcript"))
    assert isinstance(final, Transcript) and final.final and final.utterance == 1
    assert words(final.text) >= QUESTION_WORDS, final.text
    # Positions: speech from ~0.5 s, ending ~1 s before the end; the chunks it covers.
    assert 350 <= started.at_ms <= 700  # type: ignore[union-attr]
    speech_end_ms = (question.size - 16000) * 1000 // 16000
    assert abs(stopped.at_ms - speech_end_ms) < 300  # type: ignore[union-attr]
    assert final.seq_start is not None and final.seq_end is not None
    assert final.seq_start <= 25 - 300 // 20 + 5  # pre-roll before the speech start
    assert final.seq_end >= speech_end_ms // 20
    assert final.stt_ms is not None and final.stt_ms < 5000
    assert events.of("heartbeat")
    # The replay buffer dropped what the transcript covers.
    assert client.buffered_ms <= (len(chunks) - 1 - final.seq_end) * 20 + 1
    await client.close()


async def test_silence_only_gives_no_turn(nc: NatsClient) -> None:
    events = Events()
    client = RecognitionClient(nc, open_request(), events)
    await client.start()
    await stream(client, frames(np.zeros(32000, np.float32), InputFormat()), speed=2)
    # Heartbeats prove the worker went through the audio; nothing else came.
    await events.wait_for(
        lambda: any(isinstance(e, SpeechHeartbeat) and e.last_seq == 99 for e in events.of("heartbeat"))
    )
    await asyncio.sleep(0.6)
    assert {e.type for e in events.items} == {"heartbeat"}
    await client.close()


async def test_garbage_bytes_give_an_error_and_the_session_goes_on(
    nc: NatsClient, question: np.ndarray
) -> None:
    events = Events()
    client = RecognitionClient(nc, open_request(), events)
    await client.start()
    garbage = np.random.default_rng(5).integers(0, 256, 640 * 10, dtype=np.uint8).tobytes()
    for i in range(10):
        await client.send_audio(garbage[i * 640 : (i + 1) * 640])
    await client.send_audio(b"\x01\x02\x03")  # odd length: not PCM16 either
    await events.wait_for(lambda: events.of("error"))
    error = events.of("error")[0]
    assert error.error.code == Codes.SPEECH_UNDECODABLE_AUDIO.code and not error.fatal  # type: ignore[union-attr]
    assert len(events.of("error")) <= 2  # one a second at most, not one per bad chunk
    # Same session, real speech: recognised as usual.
    await stream(client, frames(question, InputFormat()), speed=2)
    await events.wait_for(lambda: events.of("transcript"))
    assert words(events.of("transcript")[0].text) >= QUESTION_WORDS  # type: ignore[union-attr]
    await client.close()


async def test_mulaw_8khz_is_recognised(nc: NatsClient, espeak: EspeakTTS) -> None:
    fmt = InputFormat(encoding="mulaw", sample_rate=8000)
    events = Events()
    client = RecognitionClient(nc, open_request(fmt), events)
    await client.start()
    said = with_silence(await speak(espeak, "Hello, I would like to order a pizza.", 8000), 8000, 0.5, 1.0)
    await stream(client, frames(said, fmt), speed=2)
    await events.wait_for(lambda: events.of("transcript"))
    assert words(events.of("transcript")[0].text) >= {"order", "pizza"}  # type: ignore[union-attr]
    await client.close()


async def test_webm_opus_upload_is_recognised(nc: NatsClient, espeak: EspeakTTS) -> None:
    fmt = InputFormat(encoding="webm_opus")
    events = Events()
    client = RecognitionClient(nc, open_request(fmt), events)
    await client.start()
    recording = encode_webm_opus(await speak(espeak, QUESTION), 16000)  # as MediaRecorder makes it
    await client.control("utterance_start")
    for i in range(0, len(recording), 4096):
        await client.send_audio(recording[i : i + 4096])
    await client.control("utterance_end")
    await events.wait_for(lambda: events.of("transcript"))
    final = events.of("transcript")[0]
    assert words(final.text) >= QUESTION_WORDS  # type: ignore[union-attr]
    assert final.seq_start == 0 and final.seq_end == (len(recording) - 1) // 4096  # type: ignore[union-attr]

    # A silent recording is no turn; a broken one is an error; the session goes on.
    await client.control("utterance_start")
    await client.send_audio(encode_webm_opus(np.zeros(16000, np.float32), 16000))
    await client.control("utterance_end")
    await events.wait_for(lambda: events.of("no_speech"))
    assert events.of("no_speech")[0].utterance == 2  # type: ignore[union-attr]
    await client.control("utterance_start")
    await client.send_audio(b"this is not a webm file" * 50)
    await client.control("utterance_end")
    await events.wait_for(lambda: events.of("error"))
    assert events.of("error")[0].error.code == Codes.SPEECH_UNDECODABLE_AUDIO.code  # type: ignore[union-attr]
    await client.close()


async def test_duplicates_are_dropped_and_gaps_reported(nc: NatsClient) -> None:
    audio_subject, _, seen = await open_raw(nc)
    silence = float_to_pcm16(np.zeros(320, np.float32)).tobytes()
    for seq in (0, 1, 1, 2, 5, 3, 6):
        await nc.publish(audio_subject, silence, headers={HDR_SEQ: str(seq)})
    await nc.publish(audio_subject, silence)  # no sequence number: refused
    await seen.wait_for(lambda: bool(seen.of("heartbeat")) and seen.of("heartbeat")[-1].get("last_seq") == 6)
    beat = seen.of("heartbeat")[-1]
    assert beat.get("last_seq") == 6 and beat["duplicates"] == 2 and beat["gaps"] == 1
    gaps = [e for e in seen if e["type"] == "audio_gap"]
    assert [(g["from_seq"], g["to_seq"]) for g in gaps] == [(3, 4)]
    errors = [e for e in seen if e["type"] == "error"]
    assert errors and errors[0]["error"]["code"] == Codes.BUS_BAD_MESSAGE.code  # type: ignore[index]
    # Numbers increase without holes: nothing was lost on the way.
    numbers = [int(e["n"]) for e in seen]  # type: ignore[call-overload]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_open_refuses_unknown_engines_and_missing_keys(nc: NatsClient) -> None:
    for engine, code in (("klingon", Codes.SPEECH_UNKNOWN_ENGINE), ("deepgram", Codes.SPEECH_KEY_MISSING)):
        client = RecognitionClient(nc, open_request(stt=VoiceEngineConfig(engine=engine)), Events())
        with pytest.raises(ParleyError) as err:
            await client.start()
        assert err.value.code is code
    raw = await nc.request(subjects.SPEECH_SESSION_OPEN, b'{"voice_session_id": "x"}', timeout=5)
    assert json.loads(raw.data)["error"]["code"] == Codes.BUS_BAD_MESSAGE.code


async def test_barge_in_while_the_agent_speaks(nc: NatsClient, question: np.ndarray) -> None:
    events = Events()
    client = RecognitionClient(nc, open_request(), events)
    await client.start()
    await client.control("agent_speaking", speaking=True)
    await stream(client, frames(question, InputFormat()), speed=2)
    await events.wait_for(lambda: events.of("transcript"))
    kinds = [e.type for e in events.items if e.type != "heartbeat"]
    assert kinds[:2] == ["speech_started", "barge_in"], kinds
    await client.close()


async def test_worker_reports_busy_when_full(infra: Infra, worker: FastAPI) -> None:
    service = worker.state.service
    limit = service.settings.speech_max_sessions
    # Zero, not the sessions held now: an earlier test's session may still be closing and free a slot.
    service.settings.speech_max_sessions = 0
    try:
        nc = await nats.connect(infra.nats_url)
        client = RecognitionClient(nc, open_request(), Events(), open_attempts=2)
        with pytest.raises(ParleyError) as err:
            await client.start()
        assert err.value.code is Codes.SPEECH_WORKER_BUSY
        await nc.close()
    finally:
        service.settings.speech_max_sessions = limit


async def test_an_idle_session_sleeps_and_wakes_on_the_next_audio(
    nc: NatsClient, worker: FastAPI, question: np.ndarray
) -> None:
    settings = worker.state.service.settings
    idle = settings.speech_idle_timeout_s
    request = open_request()
    closed: list[str] = []

    async def watch(msg: object) -> None:
        event = json.loads(msg.data)  # type: ignore[attr-defined]
        if event["type"] == "closed":
            closed.append(event["reason"])

    await nc.subscribe(subjects.session_speech(request.conversation_id), cb=watch)
    events = Events()
    client = RecognitionClient(nc, request, events)
    settings.speech_idle_timeout_s = 0.5
    try:
        await client.start()
        for _ in range(60):
            if closed:
                break
            await asyncio.sleep(0.05)
        assert closed == ["idle"]
    finally:
        settings.speech_idle_timeout_s = idle
    await asyncio.sleep(3.5)  # longer than the heartbeat watchdog: no re-open while idle
    assert client.generation == 0 and client.reopens == 0 and not events.of("error")
    await stream(client, frames(question, InputFormat()), speed=2)
    await events.wait_for(lambda: events.of("transcript"))
    assert client.generation == 1 and client.reopens == 1
    assert words(events.of("transcript")[0].text) >= QUESTION_WORDS  # type: ignore[union-attr]
    await client.close()


class Seen(list[dict[str, object]]):
    """A session's events as they are on the bus (JSON objects), for what a client would hide."""

    async def collect(self, msg: Msg) -> None:
        self.append(json.loads(msg.data))

    def of(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self if e["type"] == kind]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; events: {[e['type'] for e in self]}")
            await asyncio.sleep(0.05)


async def open_raw(nc: NatsClient) -> tuple[str, str, Seen]:
    """A session opened with a raw subscription to its events (subscribed before the open)."""
    request = open_request()
    seen = Seen()
    await nc.subscribe(subjects.session_speech(request.conversation_id), cb=seen.collect)
    reply = SpeechSessionOpened.model_validate_json(
        (await nc.request(subjects.SPEECH_SESSION_OPEN, request.model_dump_json().encode(), timeout=5)).data
    )
    assert reply.ok and reply.audio_subject
    return reply.audio_subject, request.conversation_id, seen


async def burst(nc: NatsClient, subject: str, seconds: int) -> None:
    silence = float_to_pcm16(np.zeros(320, np.float32)).tobytes()
    for seq in range(seconds * 50):
        await nc.publish(subject, silence, headers={HDR_SEQ: str(seq)})
    await nc.flush()


async def test_a_replay_sized_burst_is_taken_in_and_a_flood_is_cut(nc: NatsClient) -> None:
    # 20 s at once (what an edge replays after a re-open): processed, nothing refused.
    subject, _, seen = await open_raw(nc)
    await burst(nc, subject, 20)
    await seen.wait_for(
        lambda: any(e.get("last_seq") == 999 and e.get("backlog_ms") == 0 for e in seen.of("heartbeat"))
    )
    assert not [e for e in seen if e["type"] in ("error", "closed")]
    # 40 s at once is more than an utterance plus the backlog: the session is closed, not grown.
    subject, _, seen = await open_raw(nc)
    await burst(nc, subject, 40)
    await seen.wait_for(lambda: bool(seen.of("closed")))
    errors = seen.of("error")
    assert errors and errors[0]["fatal"] is True
    assert errors[0]["error"]["code"] == Codes.SPEECH_BACKLOG_EXCEEDED.code  # type: ignore[index]
    assert [e["reason"] for e in seen if e["type"] == "closed"] == ["backlog_exceeded"]


async def test_a_worker_that_cannot_keep_up_cuts_the_session(nc: NatsClient, worker: FastAPI) -> None:
    settings = worker.state.service.settings
    limit = settings.speech_max_backlog_ms
    settings.speech_max_backlog_ms = 1  # anything that waits at all is "behind"
    try:
        subject, _, seen = await open_raw(nc)
        await burst(nc, subject, 5)
        await seen.wait_for(lambda: bool(seen.of("closed")))
    finally:
        settings.speech_max_backlog_ms = limit
    assert [e["reason"] for e in seen if e["type"] == "closed"] == ["backlog_exceeded"]


async def test_audio_that_stops_mid_turn_ends_the_turn(nc: NatsClient, espeak: EspeakTTS) -> None:
    """Push-to-talk released without `flush`: no trailing silence ever arrives."""
    events = Events()
    client = RecognitionClient(nc, open_request(), events)
    await client.start()
    said = with_silence(await speak(espeak, QUESTION), 16000, 0.5, 0.0)
    await stream(client, frames(said, InputFormat()), speed=2)
    await events.wait_for(lambda: events.of("transcript"))
    assert words(events.of("transcript")[0].text) >= QUESTION_WORDS  # type: ignore[union-attr]
    await client.close()


async def test_a_cancel_as_audio_wakes_the_session_stops_it(
    nc: NatsClient, worker: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 `asyncio.wait_for` swallowed a cancel that landed as its wait ended: the
    session's loop, cancelled as a chunk woke it, ran on. (`close` cancels it after marking the
    session closed, which the loop checks, so there it stopped one step later; the cancel was lost
    all the same.)"""
    monkeypatch.setattr(recognition, "IDLE_TICK_S", 60.0)  # no tick ends the wait meanwhile
    subject, conversation_id, _ = await open_raw(nc)
    session = worker.state.service.sessions[conversation_id]
    runner = session._runner
    assert runner is not None
    await asyncio.sleep(0.2)  # into its wait
    chunk = float_to_pcm16(np.zeros(320, np.float32)).tobytes()
    await session.on_message(Msg(nc, subject=subject, data=chunk, headers={HDR_SEQ: "0"}))  # a chunk ...
    runner.cancel()  # ... as the loop is cancelled
    try:
        done, _ = await asyncio.wait({runner}, timeout=2)
        assert done, "the session's loop ran on after it was cancelled"
        assert runner.cancelled()
    finally:
        await session.close("client")
