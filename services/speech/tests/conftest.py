"""Speech tests: the offline models are loaded once per test session (they are the slow part),
and speech to recognise is made by espeak-ng from the wheel, like a user's voice would be."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import nats
import numpy as np
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

from parley_devstack.testing import Infra
from parley_speech.audio.formats import Samples
from parley_speech.audio.resample import resample
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.silero import SileroModel
from parley_speech.engines.whisper import WhisperSTT


@pytest.fixture(scope="session")
def stt_executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(scope="session")
def whisper(stt_executor: ThreadPoolExecutor) -> WhisperSTT:
    return WhisperSTT(stt_executor, num_workers=2)


@pytest.fixture(scope="session")
def silero() -> SileroModel:
    return SileroModel()


@pytest.fixture(scope="session")
async def espeak() -> AsyncIterator[EspeakTTS]:
    engine = EspeakTTS(processes=1)
    await engine.start()
    yield engine
    await engine.aclose()


async def speak(engine: EspeakTTS, text: str, rate: int = 16000) -> Samples:
    """`text` spoken by espeak-ng, as float32 mono at `rate`."""
    parts = [chunk.samples async for chunk in engine.synthesize(text)]
    return resample(np.concatenate(parts), engine.sample_rate, rate)


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:\"'").lower() for w in text.split()}


@pytest.fixture
async def nc(infra: Infra, worker: FastAPI) -> AsyncIterator[NatsClient]:
    """A NATS client on the bus of the module's speech `worker` (which it starts first)."""
    client = await nats.connect(infra.nats_url)
    yield client
    await client.close()
