"""A WebRTC client of Parley calls in Python (aiortc): what a browser page does, for tests,
benchmarks and scripts. `ClientPeer` offers a microphone track and an events data channel, collects
the data channel's events and the agent's audio; `ToneTrack` and `PcmTrack` are microphones.

    peer = ClientPeer()
    sdp = await peer.offer(PcmTrack(question_pcm16_48k))
    answer = POST /api/realtime/webrtc {"sdp": sdp}  (with X-CSRF-Token)
    await peer.accept(answer)
    await peer.wait_event("turn_complete")
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz


class _PacedTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pts = 0
        self.start: float | None = None

    def samples(self, offset: int) -> np.ndarray[Any, Any]:
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.AudioFrame.from_ndarray(
            self.samples(self.pts).astype("<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.pts += FRAME
        return frame


class ToneTrack(_PacedTrack):
    """A microphone holding a steady tone."""

    def __init__(self, freq: float = 300.0) -> None:
        super().__init__()
        self.freq = freq

    def samples(self, offset: int) -> np.ndarray[Any, Any]:
        t = (offset + np.arange(FRAME)) / RATE
        return np.sin(2 * math.pi * self.freq * t) * 0.3 * 32767


class PcmTrack(_PacedTrack):
    """A microphone saying `pcm` (PCM16 mono 48 kHz) after `lead_ms` of silence, then silent;
    `say()` queues more."""

    def __init__(self, pcm: bytes = b"", lead_ms: int = 0) -> None:
        super().__init__()
        self.queue = np.zeros(RATE * lead_ms // 1000, dtype=np.int16)
        if pcm:
            self.say(pcm)

    def say(self, pcm: bytes) -> None:
        self.queue = np.concatenate([self.queue, np.frombuffer(pcm, dtype="<i2")])

    @property
    def done(self) -> bool:
        return self.queue.size == 0

    def samples(self, offset: int) -> np.ndarray[Any, Any]:
        out = np.zeros(FRAME, dtype=np.int16)
        take = self.queue[:FRAME]
        out[: take.size] = take
        self.queue = self.queue[FRAME:]
        return out


@dataclass
class ClientPeer:
    """The browser's side: a microphone track, an events data channel, the agent's audio heard."""

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    events: list[dict[str, Any]] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)  # PCM16 48 kHz mono of the agent's track
    new_event: asyncio.Event = field(default_factory=asyncio.Event)
    channel_closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    channel: RTCDataChannel | None = None

    async def offer(self, mic: MediaStreamTrack | None = None) -> str:
        channel = self.channel = self.pc.createDataChannel("events")

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self.events.append(json.loads(message))
            self.new_event.set()

        @channel.on("close")
        def on_close() -> None:
            self.channel_closed.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.create_task(self._listen(track)))

        self.pc.addTrack(mic or ToneTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):  # type: ignore[arg-type]
                    self.heard += out.to_ndarray().tobytes()

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.channel is not None
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    def find(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.events if e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_event(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:  # noqa: ASYNC109
        """The first event of `kind` (with these fields) received so far, or the next one."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(kind, **match)
            if found:
                return found[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} {match} among {self.events}")
            self.new_event.clear()
            # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as an event arrives.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.new_event.wait()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
