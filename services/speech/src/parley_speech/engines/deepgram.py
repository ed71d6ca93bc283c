"""Deepgram live streaming STT over its WebSocket (`wss://api.deepgram.com/v1/listen`).

Wire format (as Deepgram documents it, and as LiveKit's and Pipecat's plugins speak it):
- Connect with the options as query parameters (`model`, `encoding=linear16`, `sample_rate`,
  `channels`, `interim_results`, `punctuate`, `endpointing`, `language`) and the header
  `Authorization: Token <key>`. A bad key is refused at the handshake (HTTP 401).
- Send the audio as binary frames; `{"type": "KeepAlive"}` while no audio flows (Deepgram closes a
  socket silent for 10 s with 1011); `{"type": "CloseStream"}` at the end: Deepgram answers the
  remaining results, a `Metadata` message, and closes.
- Receive JSON: `{"type": "Results", "is_final", "speech_final", "channel": {"alternatives":
  [{"transcript", "confidence", "words"}]}}` (interim results have `is_final: false`; the final
  ones of an utterance are concatenated), `SpeechStarted`, `UtteranceEnd`, `Metadata`.
- Errors: the handshake's HTTP status, or a close frame with a code (1008 bad data or auth, 1011
  server timeout or error) before our CloseStream.

One socket per utterance: it opens when speech starts (audio is queued meanwhile) and closes at
the end of the turn, so nothing idles between turns. Endpointing stays ours (policy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Unpack
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from parley_common.errors import ParleyError
from parley_common.tasks import cancel_and_wait
from parley_speech.audio.formats import Samples, float_to_pcm16
from parley_speech.engines import errors
from parley_speech.engines.base import STT_RATE, InterimCallback, STTEngine, STTStream
from parley_speech.engines.websocket import SocketOptions, WebSocketEngine

KEEPALIVE_S = 5.0


class DeepgramSTT(STTEngine, WebSocketEngine):
    name = "deepgram"
    max_message_bytes = 2**22

    def __init__(
        self,
        *,
        model: str,
        endpointing_ms: int = 300,
        keepalive_s: float = KEEPALIVE_S,
        **socket: Unpack[SocketOptions],
    ) -> None:
        WebSocketEngine.__init__(self, **socket)
        self.model = model
        self.keepalive_s = keepalive_s
        self.endpointing_ms = endpointing_ms

    def stream(self, *, language: str | None = None, on_interim: InterimCallback | None = None) -> STTStream:
        return DeepgramStream(self, language=language, on_interim=on_interim)

    async def recognize(self, samples: Samples, *, language: str | None = None) -> str:
        stream = self.stream(language=language)
        await stream.push(samples)
        return await stream.end()

    def listen_url(self, language: str | None) -> str:
        params = {
            "model": self.model,
            "encoding": "linear16",
            "sample_rate": STT_RATE,
            "channels": 1,
            "interim_results": "true",
            "punctuate": "true",
            "smart_format": "true",
            "endpointing": self.endpointing_ms,
            "vad_events": "true",
        }
        if language:
            params["language"] = language
        return f"{self.url}?{urlencode(params)}"


class DeepgramStream(STTStream):
    def __init__(
        self, engine: DeepgramSTT, *, language: str | None, on_interim: InterimCallback | None
    ) -> None:
        self.engine, self.on_interim = engine, on_interim
        self.language = language
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)
        self._finals: list[str] = []
        self._closing = False
        self._failure: ParleyError | None = None
        self._task = asyncio.create_task(self._run())

    async def push(self, samples: Samples) -> None:
        if self._failure is not None:
            raise self._failure
        if samples.size:
            try:
                self._outbox.put_nowait(float_to_pcm16(np.asarray(samples, np.float32)).tobytes())
            except asyncio.QueueFull as exc:  # the socket is not taking audio: bounded, so fail
                raise errors.timeout(self.engine.name) from exc

    async def end(self) -> str:
        self._closing = True
        await self._outbox.put(None)
        try:
            async with asyncio.timeout(self.engine.read_timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError as exc:
            self._task.cancel()
            raise errors.timeout(self.engine.name) from exc
        if self._failure is not None:
            raise self._failure
        return " ".join(t for t in self._finals if t).strip()

    async def aclose(self) -> None:
        self._closing = True
        await cancel_and_wait(self._task)

    # ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            ws = await self.engine.open_socket(
                self.engine.listen_url(self.language), {"Authorization": f"Token {self.engine.api_key}"}
            )
        except ParleyError as exc:
            self._failure = exc
            return
        async with ws:
            sender = asyncio.create_task(self._send(ws))
            try:
                await self._receive(ws)
            except ParleyError as exc:
                self._failure = exc
            finally:
                await cancel_and_wait(sender)

    async def _send(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as audio is
                # queued, and this loop would keep the socket alive while `_run` waits for it.
                try:
                    async with asyncio.timeout(self.engine.keepalive_s):
                        item = await self._outbox.get()
                except TimeoutError:
                    await ws.send(json.dumps({"type": "KeepAlive"}))
                    continue
                if item is None:
                    await ws.send(json.dumps({"type": "CloseStream"}))
                    return
                await ws.send(item)

    async def _receive(self, ws: ClientConnection) -> None:
        messages = self.engine.messages(
            ws,
            # While the utterance goes on the socket may be quiet; after CloseStream it answers.
            timeout_s=lambda: self.engine.read_timeout_s if self._closing else None,
            ends_normally=lambda code: self._closing and code in (None, 1000),
        )
        try:
            async for data in messages:
                kind = data.get("type")
                if kind == "Results":
                    self._on_results(data)
                elif kind == "Metadata" and self._closing:
                    continue  # Deepgram sends it last, then closes
                elif kind == "Error" or "err_code" in data:
                    detail = str(data.get("err_code") or data.get("description") or "error")
                    raise errors.protocol(self.engine.name, detail)
        finally:
            await messages.aclose()

    def _on_results(self, data: dict[str, object]) -> None:
        try:
            channel = data["channel"]
            assert isinstance(channel, dict)
            transcript = str(channel["alternatives"][0]["transcript"])
        except (KeyError, IndexError, TypeError, AssertionError) as exc:
            raise errors.protocol(self.engine.name, "a Results message has no transcript") from exc
        if data.get("is_final"):
            if transcript:
                self._finals.append(transcript)
        elif self.on_interim is not None and transcript:
            self.on_interim(" ".join([*self._finals, transcript]))
