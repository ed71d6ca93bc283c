"""Cloud engine clients against local fakes of their real wire formats: results, and each
failure (bad key, rate limit, 5xx, timeout, unreachable, a stream cut in the middle) as its
precise `speech.engine_*` code. Over the bus, a provider dropping mid-stream is an `error` event
and the voice session (or the next sentence) goes on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import nats
import numpy as np
import pytest
from fastapi import FastAPI
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.catalog_contract import AgentConfig, AgentResolveReply, AgentSnapshot, AgentStatus
from parley_common.errors import Codes, ErrorCode, ParleyError
from parley_common.speech_client import RecognitionClient, TtsStream
from parley_common.speech_contract import ENGINES, EngineKind, InputFormat, VoiceEngineConfig
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra
from parley_speech.app import build_app
from parley_speech.engines.deepgram import DeepgramStream, DeepgramSTT
from parley_speech.engines.elevenlabs import ElevenLabsTTS
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.openai_audio import OpenAISTT, OpenAITTS
from parley_speech.engines.registry import EngineRegistry
from parley_speech.settings import SpeechSettings

from .conftest import speak
from .fake_providers import FakeDeepgram, FakeElevenLabs, FakeSpeech, FakeTranscriptions, running
from .support import Events, frames, open_request, stream, with_silence

SECOND = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 200).astype(np.float32) * 0.3


@pytest.fixture(scope="module")
def transcriptions() -> Iterator[FakeTranscriptions]:
    with FakeTranscriptions() as fake:
        yield fake


@pytest.fixture(scope="module")
def speech_fake() -> Iterator[FakeSpeech]:
    with FakeSpeech() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0, connect=1.0)) as client:
        yield client


@pytest.fixture(scope="module")
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with running(FakeDeepgram()) as fake:
        yield fake


@pytest.fixture(scope="module")
async def elevenlabs() -> AsyncIterator[FakeElevenLabs]:
    async with running(FakeElevenLabs()) as fake:
        yield fake


# Every fake refuses these keys the way its provider does (fake_providers.py).
REFUSED = [("bad", Codes.SPEECH_ENGINE_AUTH_FAILED), ("limited", Codes.SPEECH_ENGINE_RATE_LIMITED)]
SLOW = ("slow", Codes.SPEECH_ENGINE_TIMEOUT)
DROPPED = ("drop", Codes.SPEECH_ENGINE_DISCONNECTED)


async def fails_with(code: ErrorCode, aw: object) -> None:
    with pytest.raises(ParleyError) as err:
        await aw  # type: ignore[misc]
    assert err.value.code is code, err.value


# ------------------------------------------------------------------------ OpenAI-compatible


def openai_stt(fake: FakeTranscriptions, http: httpx.AsyncClient, key: str = "good") -> OpenAISTT:
    return OpenAISTT("openai", client=http, base_url=fake.base_url, api_key=key, model="whisper-1")


async def test_openai_transcription(transcriptions: FakeTranscriptions, http: httpx.AsyncClient) -> None:
    text = await openai_stt(transcriptions, http).recognize(SECOND, language="en-US")
    assert text == "heard 1000 ms of whisper-1 en"
    seen = transcriptions.requests[-1]
    assert seen.method == "POST" and seen.headers["authorization"] == "Bearer good"
    assert (
        await openai_stt(transcriptions, http).recognize(np.zeros(100, np.float32)) == ""
    )  # too short: no call


@pytest.mark.parametrize(("key", "code"), [*REFUSED, ("broken", Codes.SPEECH_ENGINE_UNAVAILABLE), SLOW])
async def test_openai_transcription_errors(
    transcriptions: FakeTranscriptions, http: httpx.AsyncClient, key: str, code: ErrorCode
) -> None:
    await fails_with(code, openai_stt(transcriptions, http, key).recognize(SECOND))


async def test_openai_unreachable(http: httpx.AsyncClient) -> None:
    stt = OpenAISTT(
        "groq", client=http, base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", model="m"
    )
    await fails_with(Codes.SPEECH_ENGINE_UNAVAILABLE, stt.recognize(SECOND))


@pytest.mark.parametrize("response_format", ["pcm", "wav"])
async def test_openai_speech_streams_pcm_or_wav(
    speech_fake: FakeSpeech, http: httpx.AsyncClient, response_format: str
) -> None:
    tts = OpenAITTS(
        "openai",
        client=http,
        base_url=speech_fake.base_url,
        api_key="good",
        model="tts-1",
        voice="alloy",
        response_format=response_format,
    )
    chunks = [c async for c in tts.synthesize("Hello there")]
    samples = np.concatenate([c.samples for c in chunks])
    assert tts.sample_rate == 24000
    assert samples.size == 24000 * 60 * len("Hello there") // 1000
    assert len(chunks) > 3 and chunks[-1].text_end == len("Hello there")
    assert speech_fake.requests[-1].json["response_format"] == response_format


async def test_openai_speech_errors_and_a_cut_stream(
    speech_fake: FakeSpeech, http: httpx.AsyncClient
) -> None:
    def tts(key: str) -> OpenAITTS:
        return OpenAITTS(
            "openai", client=http, base_url=speech_fake.base_url, api_key=key, model="tts-1", voice="alloy"
        )

    async def drain(engine: OpenAITTS) -> int:
        total = 0
        async for chunk in engine.synthesize("Hello there"):
            total += chunk.samples.size
        return total

    for key, code in [*REFUSED, SLOW]:
        await fails_with(code, drain(tts(key)))
    got: list[int] = []
    with pytest.raises(ParleyError) as err:
        async for chunk in tts("drop").synthesize("Hello there"):
            got.append(chunk.samples.size)
    assert err.value.code is Codes.SPEECH_ENGINE_DISCONNECTED and sum(got) > 0


# ---------------------------------------------------------------------------------- Deepgram


def dg(fake: FakeDeepgram, key: str = "good", **kw: Any) -> DeepgramSTT:
    return DeepgramSTT(url=f"{fake.url}/v1/listen", api_key=key, model="nova-3", read_timeout_s=1.0, **kw)


async def test_deepgram_streams_interim_and_final_results(deepgram: FakeDeepgram) -> None:
    interims: list[str] = []
    stream_ = dg(deepgram).stream(language="en-US", on_interim=interims.append)
    for i in range(0, SECOND.size, 320):
        await stream_.push(SECOND[i : i + 320])
    assert await stream_.end() == "heard 1000 ms"
    assert interims and interims[0].startswith("partial")
    path, headers = deepgram.connections[-1]
    assert path.startswith("/v1/listen?") and "encoding=linear16" in path and "sample_rate=16000" in path
    assert "language=en-US" in path and headers["Authorization"] == "Token good"
    assert {"type": "CloseStream"} in deepgram.received


async def test_deepgram_keepalive_while_no_audio_flows(deepgram: FakeDeepgram) -> None:
    deepgram.received.clear()
    stream_ = dg(deepgram, keepalive_s=0.05).stream()
    await stream_.push(SECOND[:3200])
    await asyncio.sleep(0.3)
    assert await stream_.end() == "heard 200 ms"
    assert deepgram.received.count({"type": "KeepAlive"}) >= 2


async def test_deepgram_a_cancel_as_audio_is_queued_stops_the_sender(deepgram: FakeDeepgram) -> None:
    """The stream cancels its sender when the socket's reading ends (an error while the socket is
    still open included) and then waits for it. On Python 3.11 `asyncio.wait_for` swallowed a
    cancel that landed as audio was queued: the sender ran on, keeping the socket alive with
    KeepAlives, and the stream waited for it."""
    stream_ = dg(deepgram, keepalive_s=60).stream()
    assert isinstance(stream_, DeepgramStream)
    try:
        sender = None
        async with asyncio.timeout(5):
            while sender is None:  # the stream's own sender task, once its socket is open
                await asyncio.sleep(0.01)
                sender = next((t for t in asyncio.all_tasks() if _runs(t, DeepgramStream._send)), None)
        for _ in range(5):  # into its wait
            await asyncio.sleep(0)
        await stream_.push(SECOND[:320])  # audio queued ...
        sender.cancel()  # ... as the sender is cancelled
        done, _ = await asyncio.wait({sender}, timeout=2)
        assert done, "the sender ran on after it was cancelled"
        assert sender.cancelled()
    finally:
        await stream_.aclose()


def _runs(task: asyncio.Task[Any], function: Callable[..., object]) -> bool:
    return bool(getattr(task.get_coro(), "__qualname__", None) == function.__qualname__)


@pytest.mark.parametrize(("key", "code"), [*REFUSED, DROPPED, SLOW])
async def test_deepgram_errors(deepgram: FakeDeepgram, key: str, code: ErrorCode) -> None:
    async def utterance() -> str:
        stream_ = dg(deepgram, key).stream()
        for i in range(0, SECOND.size, 320):
            await stream_.push(SECOND[i : i + 320])
            await asyncio.sleep(0.001)
        return await stream_.end()

    await fails_with(code, utterance())


async def test_deepgram_unreachable() -> None:
    stt = DeepgramSTT(url=f"ws://127.0.0.1:{free_port()}/v1/listen", api_key="k", model="nova-3")
    await fails_with(Codes.SPEECH_ENGINE_UNAVAILABLE, stt.recognize(SECOND))


# ------------------------------------------------------------------------------- ElevenLabs


def eleven(fake: FakeElevenLabs, key: str = "good") -> ElevenLabsTTS:
    return ElevenLabsTTS(
        url=f"{fake.url}/v1", api_key=key, model="eleven_flash_v2_5", voice="v1", read_timeout_s=1.0
    )


async def test_elevenlabs_streams_audio_with_alignment(elevenlabs: FakeElevenLabs) -> None:
    text = "Hello big world"
    chunks = [c async for c in eleven(elevenlabs).synthesize(text)]
    ends = [c.text_end for c in chunks]
    assert ends == [6, 10, 15, 15]  # per word, from the alignment; then the end
    audio = sum(c.samples.size for c in chunks)
    assert audio == sum(24000 * 60 * (len(w) + 1) // 1000 for w in text.split())
    path, headers = elevenlabs.connections[-1]
    assert path.startswith("/v1/text-to-speech/v1/stream-input?") and "output_format=pcm_24000" in path
    assert headers["xi-api-key"] == "good"
    sent = [m for m in elevenlabs.received if "generation_config" not in m]
    assert sent[0] == {"text": "Hello big world "} and sent[-1] == {"text": ""}


async def test_elevenlabs_streaming_text_in(elevenlabs: FakeElevenLabs) -> None:
    async def deltas() -> AsyncIterator[str]:
        for piece in ("Good ", "morning ", "to you"):
            yield piece

    chunks = [c async for c in eleven(elevenlabs).stream(deltas())]
    assert chunks[-1].text_end == len("Good morning to you")
    assert sum(c.samples.size for c in chunks) > 0


@pytest.mark.parametrize(("key", "code"), [*REFUSED, DROPPED])
async def test_elevenlabs_errors(elevenlabs: FakeElevenLabs, key: str, code: ErrorCode) -> None:
    async def drain() -> None:
        async for _ in eleven(elevenlabs, key).synthesize("Hello big world"):
            pass

    await fails_with(code, drain())


# ---------------------------------------------------------------------------- over the bus


@pytest.fixture(scope="module")
async def cloud_worker(
    infra: Infra, deepgram: FakeDeepgram, elevenlabs: FakeElevenLabs
) -> AsyncIterator[FastAPI]:
    settings = SpeechSettings(
        nats_url=infra.nats_url,
        speech_deepgram_url=f"{deepgram.url}/v1/listen",
        speech_deepgram_api_key="good",
        speech_elevenlabs_url=f"{elevenlabs.url}/v1",
        speech_elevenlabs_api_key="good",
        speech_read_timeout_s=2.0,
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_deepgram_dropping_mid_utterance_is_an_error_and_the_session_goes_on(
    infra: Infra, cloud_worker: FastAPI, deepgram: FakeDeepgram, espeak: EspeakTTS
) -> None:
    nc = await nats.connect(infra.nats_url)
    events = Events()
    client = RecognitionClient(nc, open_request(stt=VoiceEngineConfig(engine="deepgram")), events)
    await client.start()
    chunks = frames(
        with_silence(await speak(espeak, "Hello, I would like to order a pizza."), 16000, 0.3, 0.8),
        InputFormat(),
    )
    deepgram.drop_next = True
    await stream(client, chunks, speed=3)
    await events.wait_for(lambda: events.of("error"))
    error = events.of("error")[0]
    assert error.error.code == Codes.SPEECH_ENGINE_DISCONNECTED.code and not error.fatal  # type: ignore[union-attr]
    assert error.error.params == {"engine": "deepgram", "detail": "closed 1011"}  # type: ignore[union-attr]
    await stream(client, chunks, speed=3)  # the next utterance: a new connection, recognised
    await events.wait_for(lambda: events.of("transcript"))
    assert events.of("transcript")[0].text.startswith("heard ")  # type: ignore[union-attr]
    assert events.of("transcript")[0].utterance == 2  # type: ignore[union-attr]
    await client.close()
    await nc.close()


async def test_elevenlabs_dropping_mid_sentence_is_an_error_report_then_it_speaks_again(
    infra: Infra, cloud_worker: FastAPI, elevenlabs: FakeElevenLabs
) -> None:
    nc = await nats.connect(infra.nats_url)
    subject = f"test.audio.{uuid.uuid4().hex}"
    tts_config = VoiceEngineConfig(engine="elevenlabs", voice="voice-1")
    elevenlabs.drop_next = True
    first = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject, tts=tts_config)
    await first.start()
    await first.say("Hello big world.")
    summary = await first.wait(timeout=10)
    assert summary.error is not None and summary.error.code == Codes.SPEECH_ENGINE_DISCONNECTED.code
    second = TtsStream(nc, stream_id=uuid.uuid4().hex, audio_subject=subject, tts=tts_config)
    await second.start()
    await second.say("Hello big world.")
    summary = await second.wait(timeout=10)
    assert summary.error is None and summary.chunks > 0 and summary.text_end == len("Hello big world.")
    assert "/text-to-speech/voice-1/" in elevenlabs.connections[-1][0]
    await first.aclose()
    await second.aclose()
    await nc.close()


async def test_keys_come_from_the_agents_secrets_before_the_settings(
    infra: Infra, cloud_worker: FastAPI, elevenlabs: FakeElevenLabs
) -> None:
    """The worker reads the agent's secrets through `catalog.agent.resolve` (answered here by a
    stand-in for the catalog, whose side tests/test_voice_config.py covers)."""
    nc = await nats.connect(infra.nats_url)
    with_secret, without = uuid.uuid4(), uuid.uuid4()

    async def resolve(msg: Msg) -> None:
        agent_id = uuid.UUID(json.loads(msg.data)["agent_id"])
        secrets = {"ELEVENLABS_API_KEY": "bad"} if agent_id == with_secret else {}
        snapshot = AgentSnapshot(
            agent_id=agent_id,
            version=1,
            status=AgentStatus.LIVE,
            config=AgentConfig(name="a"),
            secrets=secrets,
        )
        await msg.respond(AgentResolveReply(ok=True, snapshot=snapshot).model_dump_json().encode())

    sub = await nc.subscribe(subjects.CATALOG_AGENT_RESOLVE, cb=resolve)
    subject = f"test.audio.{uuid.uuid4().hex}"
    tts_config = VoiceEngineConfig(engine="elevenlabs")
    results = {}
    for agent_id in (with_secret, without):
        tts = TtsStream(
            nc, stream_id=uuid.uuid4().hex, audio_subject=subject, tts=tts_config, agent_id=str(agent_id)
        )
        await tts.start()
        await tts.say("Hi there.")
        results[agent_id] = await tts.wait(timeout=10)
        await tts.aclose()
    # The agent's (wrong) key was used instead of the platform's; without one, the platform's.
    error = results[with_secret].error
    assert error is not None
    assert error.code == Codes.SPEECH_ENGINE_AUTH_FAILED.code
    assert results[without].error is None and results[without].chunks > 0
    await sub.unsubscribe()
    await nc.close()


# ------------------------------------------------------------------------------ the registry


async def test_the_registry_builds_every_engine_of_the_contract_and_only_those() -> None:
    settings = SpeechSettings(
        speech_groq_api_key="k", speech_openai_api_key="k", speech_deepgram_api_key=None
    )
    with ThreadPoolExecutor(1) as pool:
        registry = EngineRegistry(settings, stt_executor=pool, agents=None)
    for kind, builders in ((EngineKind.STT, registry.stt_builders), (EngineKind.TTS, registry.tts_builders)):
        assert set(builders) == {name for name, info in ENGINES.items() if kind in info.kinds}
    groq = (await registry.tts(VoiceEngineConfig(engine="groq", voice="v"), None)).engine
    openai = (await registry.tts(VoiceEngineConfig(engine="openai"), None)).engine
    assert isinstance(groq, OpenAITTS) and isinstance(openai, OpenAITTS)
    assert (groq.base_url, groq.response_format) == ("https://api.groq.com/openai/v1", "wav")
    assert (openai.base_url, openai.response_format) == ("https://api.openai.com/v1", "pcm")
    stt = await registry.stt(VoiceEngineConfig(engine="groq", model="m"), None)
    assert isinstance(stt, OpenAISTT) and (stt.name, stt.model) == ("groq", "m")
    await fails_with(Codes.SPEECH_KEY_MISSING, registry.stt(VoiceEngineConfig(engine="deepgram"), None))
    await fails_with(Codes.SPEECH_UNKNOWN_ENGINE, registry.tts(VoiceEngineConfig(engine="deepgram"), None))
    await registry.aclose()
