"""The runtime's voice output (sessions/voice.py) against a real speech worker on the bus: an answer
pushed in deltas, as an LLM writes it, is spoken sentence by sentence on the session's audio
subject, back to back; a cancel stops it at once and reports how much text was spoken; without a
speech worker the turn gets one clear error and goes on silently."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.errors import ErrorEnvelope
from parley_common.speech_contract import HDR_SEQ, HDR_STREAM, HDR_TEXT_END, OutputFormat
from parley_devstack.testing import Infra
from parley_runtime.sessions.voice import TurnVoice
from parley_speech.app import build_app
from parley_speech.settings import SpeechSettings

ANSWER = (
    "The weather in Paris is mild today, with a light breeze from the west. "
    "Tomorrow will be warmer, and the sun should shine all afternoon. "
    "Take a light jacket for the evening."
)


@pytest.fixture(scope="module")
async def worker(infra: Infra) -> AsyncIterator[FastAPI]:
    app = build_app(SpeechSettings(nats_url=infra.nats_url, speech_heartbeat_s=0.5, speech_tts_processes=1))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[NatsClient]:
    client = await nats.connect(infra.nats_url)
    yield client
    await client.close()


class Session:
    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.conversation_id = str(uuid.uuid4())
        self.chunks: list[tuple[float, dict[str, str], bytes]] = []
        self.errors: list[ErrorEnvelope] = []

    async def listen(self) -> None:
        async def on(msg: Msg) -> None:
            self.chunks.append((time.monotonic(), dict(msg.headers or {}), msg.data))

        await self.nc.subscribe(subjects.session_audio_out(self.conversation_id), cb=on)

    def voice(self, output: OutputFormat = OutputFormat.PCM16_24000) -> TurnVoice:
        async def on_error(error: ErrorEnvelope) -> None:
            self.errors.append(error)

        return TurnVoice(self.nc, self.conversation_id, output, None, None, on_error, max_sentence_chars=120)


async def test_without_a_speech_worker_the_turn_gets_one_error(nc: NatsClient) -> None:
    """(Runs before the module's worker starts: nobody serves speech.tts.synthesize.)"""
    s = Session(nc)
    await s.listen()
    voice = s.voice()
    spoken = voice.message()
    spoken.tts.request_timeout_s = 0.3
    spoken.push("Hello there. How are you? Fine, thanks.")
    spoken.finish()
    assert await spoken.result() is None  # the message is done (silently)
    assert await voice.say("And another one.") is None
    assert [e.code for e in s.errors] == ["bus.timeout"]  # once per turn
    assert not s.chunks


async def test_an_answer_written_in_deltas_is_spoken_in_full(worker: FastAPI, nc: NatsClient) -> None:
    s = Session(nc)
    await s.listen()
    voice = s.voice(OutputFormat.PCM16_16000)
    spoken = voice.message()
    started = time.monotonic()
    for i in range(0, len(ANSWER), 7):  # an LLM's deltas
        spoken.push(ANSWER[i : i + 7])
        await asyncio.sleep(0.005)
    spoken.finish()
    assert await spoken.result() is None  # not cancelled: all of it was spoken
    # The first sentence was spoken while the rest was still being written.
    assert s.chunks and s.chunks[0][0] - started < len(ANSWER) / 7 * 0.005 + 0.5
    streams = {h[HDR_STREAM] for _, h, _ in s.chunks}
    assert len(streams) == 1 and next(iter(streams)).startswith(s.conversation_id)
    seqs = [int(h[HDR_SEQ]) for _, h, _ in s.chunks]
    assert seqs == list(range(len(seqs)))  # back to back, numbered
    assert int(s.chunks[-1][1][HDR_TEXT_END]) == len(ANSWER)
    audio_s = sum(len(d) for _, _, d in s.chunks) / 32000
    assert 6 < audio_s < 20
    # Paced: the last chunk went out about when it is due, not all at once.
    assert s.chunks[-1][0] - s.chunks[0][0] > audio_s - 1.0
    assert voice.spoken[0].text_end == len(ANSWER) and not s.errors


async def test_a_cancel_stops_the_audio_and_says_how_much_was_spoken(worker: FastAPI, nc: NatsClient) -> None:
    s = Session(nc)
    await s.listen()
    voice = s.voice()
    spoken = voice.message()
    spoken.push(ANSWER)
    spoken.finish()
    result = asyncio.create_task(spoken.result())
    while not s.chunks or time.monotonic() - s.chunks[0][0] < 1.5:
        await asyncio.sleep(0.01)
    voice.cancel()
    cancelled_at = time.monotonic()
    kept = await result
    await asyncio.sleep(0.4)
    assert kept is not None and 0 < kept < len(ANSWER) // 2
    assert ANSWER[kept - 1].isalpha() and ANSWER[kept] in " ,."  # at a word's end
    assert not [at for at, _, _ in s.chunks if at > cancelled_at + 0.2]
    # Later messages of the cancelled turn are not spoken at all.
    before = len(s.chunks)
    assert await voice.say("Anything else?") == 0
    await asyncio.sleep(0.3)
    assert len(s.chunks) == before
