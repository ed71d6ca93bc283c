"""Helpers for speech tests over the real bus: an event collector, real-time audio streaming."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import numpy as np

from parley_common.speech_client import RecognitionClient
from parley_common.speech_contract import InputFormat, SpeechEvent, SpeechSessionOpen
from parley_speech.audio.formats import Samples, float_to_pcm16, mulaw_encode

FRAME_MS = 20


class Events:
    """Collects the events a client delivers; `wait_for` polls a condition with a deadline."""

    def __init__(self) -> None:
        self.items: list[SpeechEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: SpeechEvent) -> None:
        self.items.append(event)
        self._changed.set()

    def of(self, kind: str) -> list[SpeechEvent]:
        return [e for e in self.items if e.type == kind]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"condition not met in {timeout}s; events: {[e.type for e in self.items]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))


def open_request(fmt: InputFormat | None = None, **fields: object) -> SpeechSessionOpen:
    sid = uuid.uuid4().hex
    return SpeechSessionOpen(voice_session_id=sid, conversation_id=sid, input=fmt or InputFormat(), **fields)


def frames(samples: Samples, fmt: InputFormat, frame_ms: int = FRAME_MS) -> list[bytes]:
    """float32 at the format's rate → the edge's chunks."""
    assert fmt.sample_rate is not None
    step = fmt.sample_rate * frame_ms // 1000
    pcm = float_to_pcm16(samples)
    out = []
    for i in range(0, pcm.size, step):
        block = pcm[i : i + step]
        out.append(mulaw_encode(block) if fmt.encoding == "mulaw" else block.tobytes())
    return out


async def stream(
    client: RecognitionClient, chunks: list[bytes], *, speed: float = 1.0, frame_ms: int = FRAME_MS
) -> None:
    """Send chunks on a real-time schedule (`speed` times real time), not sleep-per-chunk drift."""
    started = time.monotonic()
    for i, chunk in enumerate(chunks):
        due = started + i * frame_ms / 1000 / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.send_audio(chunk)


def with_silence(samples: Samples, rate: int, before_s: float, after_s: float) -> Samples:
    return np.concatenate(
        [np.zeros(int(before_s * rate), np.float32), samples, np.zeros(int(after_s * rate), np.float32)]
    )
