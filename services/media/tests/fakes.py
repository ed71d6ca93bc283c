"""A fake `/realtime` voice server (the Kivox protocol as the gateway speaks it) and an aiortc
client peer (a browser's part), for testing a media worker's calls without the platform."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.server import Server, ServerConnection, serve


def tone(freq: float, ms: int, rate: int = 24000, amplitude: float = 0.4) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


@dataclass
class FakeRealtime:
    """Speaks `/realtime` the way the gateway does for a voice session."""

    refuse: str | None = None  # a handshake_error reason
    greeting_audio_ms: int = 400
    answer_audio_ms: int = 300
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    audio_chunks: list[bytes] = field(default_factory=list)
    unannounced_binary: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    connections: list[ServerConnection] = field(default_factory=list)
    server: Server | None = None
    url: str = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeRealtime]:
        async with serve(self._handle, "127.0.0.1", 0) as server:
            self.server = server
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/realtime"
            yield self

    async def _send_audio(self, ws: ServerConnection, pcm: bytes) -> None:
        # In chunks of 100 ms, faster than real time (as TTS may be): the edge paces playback.
        step = 4800
        for i in range(0, len(pcm), step):
            part = pcm[i : i + step]
            await ws.send(json.dumps({"type": "audio_delta", "size": len(part)}))
            await ws.send(part)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self.auth_headers.append(ws.request.headers.get("authorization") if ws.request else None)
        try:
            hello = json.loads(await ws.recv())
            self.handshakes.append(hello)
            if self.refuse:
                await ws.send(json.dumps({"type": "handshake_error", "reason": self.refuse}))
                await ws.close(4400, self.refuse)
                return
            await ws.send(json.dumps({"type": "handshake_ok", "conversation_id": "conv-1"}))
            await ws.send(
                json.dumps(
                    {
                        "type": "signal",
                        "name": "audio_format",
                        "data": {
                            "input": {"encoding": "pcm16", "sample_rate": 16000},
                            "output": {"encoding": "pcm16", "sample_rate": 24000},
                        },
                    }
                )
            )
            await ws.send(json.dumps({"type": "text_full", "content": "Hello, how can I help?"}))
            await self._send_audio(ws, tone(440, self.greeting_audio_ms))
            await ws.send(json.dumps({"type": "turn_complete"}))
            expect_binary = False
            async for message in ws:
                if isinstance(message, bytes):
                    if expect_binary:
                        self.audio_chunks.append(message)
                        expect_binary = False
                    else:
                        self.unannounced_binary += 1
                    continue
                event = json.loads(message)
                if event.get("type") == "input_audio_stream":
                    expect_binary = True
                    continue
                self.received.append(event)
                kind = event.get("type")
                if kind == "input_text":
                    await ws.send(json.dumps({"type": "signal", "name": "transcript", "data": {"text": "x"}}))
                    await ws.send(json.dumps({"type": "text_delta", "chunk": "You said " + event["text"]}))
                    await self._send_audio(ws, tone(660, self.answer_audio_ms))
                    await ws.send(json.dumps({"type": "turn_complete"}))
                elif kind == "end":
                    await ws.send(json.dumps({"type": "session_closed", "reason": "client_end"}))
                    await ws.close(1000)
                    return
        except Exception:  # a dropped socket is what some tests do
            pass
        finally:
            self.closed.set()

    async def drop_all(self) -> None:
        """The gateway vanishes: every socket is cut without `session_closed`."""
        for ws in self.connections:
            ws.transport.abort()


class ToneTrack(MediaStreamTrack):
    """A microphone saying a steady tone (or silence), 20 ms frames at 48 kHz, paced."""

    kind = "audio"

    def __init__(self, freq: float = 300.0) -> None:
        super().__init__()
        self.freq = freq
        self.pts = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.pts / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self.pts + np.arange(960)) / 48000
        samples = (np.sin(2 * math.pi * self.freq * t) * 0.3 * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, 48000)
        self.pts += 960
        return frame


@dataclass
class ClientPeer:
    """The browser's side: a microphone track, an events data channel, the agent's audio heard."""

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    events: list[dict[str, Any]] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)  # PCM16 48 kHz mono of the agent's track
    new_event: asyncio.Event = field(default_factory=asyncio.Event)
    channel_closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self, mic: MediaStreamTrack | None = None) -> str:
        self.channel = self.pc.createDataChannel("events")

        @self.channel.on("message")
        def on_message(message: str) -> None:
            self.events.append(json.loads(message))
            self.new_event.set()

        @self.channel.on("close")
        def on_close() -> None:
            self.channel_closed.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.create_task(self._listen(track)))

        self.pc.addTrack(mic or ToneTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):  # type: ignore[arg-type]
                    self.heard += out.to_ndarray().tobytes()

    def send(self, message: dict[str, Any] | str) -> None:
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def wait_event(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} {match} among {self.events}")
            self.new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new_event.wait(), remaining)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
