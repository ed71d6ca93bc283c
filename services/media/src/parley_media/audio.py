"""Audio between a WebRTC peer and a `/realtime` voice session.

- In: the frames aiortc decodes from the microphone's Opus (s16, 48 kHz, stereo) are resampled to
  the session's input (PCM16 mono, 16 kHz by default) and cut into chunks of `chunk_ms`.
- Out: the session's `audio_delta` PCM16 (24 kHz mono by default) is resampled to 48 kHz, Opus's
  rate, and queued on `PlayoutTrack`, an aiortc audio track that yields one 20 ms frame every 20 ms
  of wall time (silence when nothing is queued) to aiortc's Opus encoder.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

FRAME_MS = 20


@dataclass(frozen=True)
class PcmFormat:
    """PCM16 mono at `sample_rate` (the only encoding the media edge speaks on `/realtime`)."""

    sample_rate: int

    @property
    def bytes_per_ms(self) -> float:
        return self.sample_rate * 2 / 1000

    @property
    def label(self) -> str:
        return f"pcm16/{self.sample_rate}"


DEFAULT_INPUT = PcmFormat(16000)
DEFAULT_OUTPUT = PcmFormat(24000)
_RATES = (8000, 16000, 24000, 44100, 48000)


def parse_format(value: Any) -> PcmFormat | None:
    """A format of the `audio_format` signal: `{"encoding": "pcm16", "sample_rate": 16000}`, or
    `"pcm16/16000"` / `"pcm16_16000"`. None for anything else (μ-law, containers): not ours."""
    encoding: Any
    rate: Any
    if isinstance(value, dict):
        encoding, rate = value.get("encoding"), value.get("sample_rate")
    elif isinstance(value, str):
        encoding, _, rate = value.replace("_", "/").partition("/")
    else:
        return None
    try:
        rate = int(rate)
    except (TypeError, ValueError):
        return None
    if encoding != "pcm16" or rate not in _RATES:
        return None
    return PcmFormat(rate)


class MicEncoder:
    """Decoded microphone frames → PCM16 mono chunks of `chunk_ms` at the session's input rate."""

    def __init__(self, fmt: PcmFormat = DEFAULT_INPUT, chunk_ms: int = FRAME_MS) -> None:
        self.format = fmt
        self.chunk_bytes = int(fmt.bytes_per_ms * chunk_ms) // 2 * 2
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=fmt.sample_rate)
        self._buffer = bytearray()

    def push(self, frame: av.AudioFrame) -> list[bytes]:
        for out in self._resampler.resample(frame):
            self._buffer += out.to_ndarray().astype("<i2", copy=False).tobytes()
        chunks = []
        while len(self._buffer) >= self.chunk_bytes:
            chunks.append(bytes(self._buffer[: self.chunk_bytes]))
            del self._buffer[: self.chunk_bytes]
        return chunks


class PlayoutTrack(MediaStreamTrack):
    """The agent's voice as an outgoing aiortc track: PCM16 of the session's output format pushed
    in (resampled to 48 kHz, Opus's rate, as it arrives), 20 ms frames paced out by wall time."""

    kind = "audio"
    rate = 48000

    def __init__(self, fmt: PcmFormat = DEFAULT_OUTPUT, *, max_ms: int = 60_000) -> None:
        super().__init__()
        self.max_bytes = int(max_ms * self.rate * 2 / 1000)
        self._frame_samples = self.rate * FRAME_MS // 1000
        self._buffer = bytearray()
        self._start: float | None = None
        self._pts = 0
        self.dropped_ms = 0.0
        self.played_ms = 0.0  # of the agent's audio (not the silence between)
        self.set_format(fmt)

    def set_format(self, fmt: PcmFormat) -> None:
        """The session's output format (announced by its `audio_format` signal)."""
        self.format = fmt
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        self._carry = b""

    @property
    def queued_ms(self) -> float:
        return len(self._buffer) / (self.rate * 2 / 1000)

    def push(self, pcm: bytes) -> None:
        pcm = self._carry + pcm
        if len(pcm) % 2:
            pcm, self._carry = pcm[:-1], pcm[-1:]
        else:
            self._carry = b""
        if not pcm:
            return
        if self.format.sample_rate == self.rate:
            self._buffer += pcm
        else:
            frame = av.AudioFrame.from_ndarray(
                np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = self.format.sample_rate
            for out in self._resampler.resample(frame):
                self._buffer += out.to_ndarray().astype("<i2", copy=False).tobytes()
        excess = len(self._buffer) - self.max_bytes
        if excess > 0:
            excess += excess % 2
            del self._buffer[:excess]
            self.dropped_ms += excess / (self.rate * 2 / 1000)

    def flush(self) -> float:
        """Drop what is queued (barge-in, cancel); returns how many ms were dropped."""
        dropped = self.queued_ms
        self._buffer.clear()
        return dropped

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / self.rate - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.2:
                # The reader fell behind (a stall): restart the clock rather than burst.
                self._start = now - self._pts / self.rate
        size = self._frame_samples * 2
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if data:
            self.played_ms += len(data) / (self.rate * 2 / 1000)
        if len(data) < size:
            data += b"\x00" * (size - len(data))
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(data, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self._frame_samples
        return frame
