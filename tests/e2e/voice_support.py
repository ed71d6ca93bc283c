"""Helpers of the voice e2e tests: speech made by espeak-ng, a voice client of `/realtime`, and
whisper to transcribe what the agent said."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from parley_speech.audio.formats import Samples, float_to_pcm16, mulaw_decode, mulaw_encode, pcm16_to_float
from parley_speech.audio.resample import resample
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.whisper import WhisperSTT

FRAME_MS = 20


class Voices:
    """espeak-ng to make speech, whisper tiny.en to check what was said (both in this process)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1)
        self.tts = EspeakTTS(processes=1)
        self.stt = WhisperSTT(self.pool, num_workers=1)

    async def start(self) -> None:
        await self.tts.start()

    async def close(self) -> None:
        await self.tts.aclose()
        self.pool.shutdown(wait=False)

    async def speak(self, text: str, rate: int = 16000) -> Samples:
        parts = [chunk.samples async for chunk in self.tts.synthesize(text)]
        return resample(np.concatenate(parts), self.tts.sample_rate, rate)

    async def words_in(self, audio: bytes, encoding: str = "pcm16", rate: int = 24000) -> set[str]:
        pcm = mulaw_decode(audio) if encoding == "mulaw" else np.frombuffer(audio, dtype="<i2")
        samples = pcm16_to_float(pcm.astype("<i2").tobytes())
        text = await self.stt.recognize(resample(samples, rate, 16000))
        return words(text)


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:\"'").lower() for w in text.split()}


def silence(seconds: float, rate: int) -> Samples:
    return np.zeros(int(seconds * rate), np.float32)


def chunks(samples: Samples, rate: int, encoding: str = "pcm16", frame_ms: int = FRAME_MS) -> list[bytes]:
    step = rate * frame_ms // 1000
    pcm = float_to_pcm16(samples)
    out = []
    for i in range(0, pcm.size, step):
        block = pcm[i : i + step]
        out.append(mulaw_encode(block) if encoding == "mulaw" else block.tobytes())
    return out


@dataclass
class VoiceClient:
    """A raw `/realtime` client: JSON events (ticks apart), and the agent's audio per turn."""

    ws: ClientConnection
    conversation_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # since the last `take_audio`
    audio_deltas: int = 0
    last_audio_at: float = 0.0
    first_audio_at: float | None = None

    async def send(self, frame: dict[str, Any] | bytes) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self, timeout: float = 20.0) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(raw, bytes):
                raise AssertionError("a binary frame without its audio_delta header")
            event: dict[str, Any] = json.loads(raw)
            if event["type"] == "tick":
                continue
            if event["type"] == "audio_delta":
                data = await asyncio.wait_for(self.ws.recv(), timeout)
                assert isinstance(data, bytes) and len(data) == event["size"], event
                self.audio += data
                self.audio_deltas += 1
                self.last_audio_at = time.monotonic()
                if self.first_audio_at is None:
                    self.first_audio_at = self.last_audio_at
            self.events.append(event)
            return event

    async def until(self, kind: str, timeout: float = 30.0, **match: Any) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return got

    async def signal(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        events = await self.until("signal", timeout, name=name)
        return events[-1]

    def take_audio(self) -> bytes:
        data, self.audio = bytes(self.audio), bytearray()
        self.first_audio_at = None
        return data

    async def stream(self, frames: list[bytes], frame_ms: int = FRAME_MS) -> None:
        """`input_audio_stream` + one binary frame per chunk, at real-time pace."""
        started = time.monotonic()
        for i, frame in enumerate(frames):
            delay = started + i * frame_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send({"type": "input_audio_stream"})
            await self.send(frame)


@asynccontextmanager
async def voice_session(
    url: str,
    agent_id: str,
    *,
    cookie: str | None = None,
    token: str | None = None,
    channel: str | None = "web-voice",
    render_directive: str | None = None,
) -> AsyncIterator[VoiceClient]:
    if token:
        url += f"?token={token}"
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        client = VoiceClient(ws)
        hello: dict[str, Any] = {"type": "handshake", "agent_id": agent_id}
        if channel is not None:
            hello["channel"] = channel
        if render_directive is not None:
            hello["render_directive"] = render_directive
        await client.send(hello)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "handshake_ok", reply
        client.conversation_id = reply["conversation_id"]
        yield client
