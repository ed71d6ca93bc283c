"""A fake `/realtime` voice server (the Kivox protocol as the gateway speaks it) and an aiortc
client peer (a browser's part), for testing a media worker's calls without the platform."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
    traceparents: list[str | None] = field(default_factory=list)
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
        self.traceparents.append(ws.request.headers.get("traceparent") if ws.request else None)
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
