"""Local fakes of the cloud speech providers, speaking their real wire formats (no real provider
is ever called):

- OpenAI-compatible audio over HTTP, on the runtime's h11 fake server (loaded from its file, as
  tests/e2e does): `POST /v1/audio/transcriptions` (multipart, checked like OpenAI checks it) and
  `POST /v1/audio/speech` (streamed PCM or WAV).
- Deepgram live STT and ElevenLabs stream-input TTS over WebSocket (the `websockets` server):
  handshake auth, their JSON messages, KeepAlive/CloseStream/EOS, error messages and closes.

Behaviour is chosen by the API key: `good`, `bad` (auth refused), `limited` (429 / quota),
`slow` (no answer within the client's timeout), `drop` (the connection dies mid-stream).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import email.policy
import io
import json
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from parley_devstack.testing import module_from_file

_fakes = module_from_file(
    "services.runtime.tests.llm.fakes", Path(__file__).parents[2] / "runtime/tests/llm/fakes.py"
)
FakeServer = _fakes.FakeServer
Reply = _fakes.Reply
Pause = _fakes.Pause
Cut = _fakes.Cut
Stall = _fakes.Stall
json_reply = _fakes.json_reply
openai_error = _fakes.openai_error

RATE = 24000


def tone_pcm(ms: int, rate: int = RATE) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def _key_reply(key: str | None) -> Any:
    if key == "bad":
        return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
    if key == "limited":
        return openai_error(429, "Rate limit reached.", type="requests", code="rate_limit_exceeded")
    if key == "broken":
        return openai_error(500, "The server had an error.", type="server_error")
    if key == "slow":
        return Reply(200, [Stall()], {}, "application/json")
    return None


class _OpenAIAudio(FakeServer):  # type: ignore[misc,valid-type]
    """An OpenAI-compatible audio endpoint: the bearer key is checked first (`_key_reply`)."""

    base_path = "/v1"

    def check(self, seen: Any) -> Any:
        key = seen.headers.get("authorization", "").removeprefix("Bearer ")
        refused = _key_reply(key)
        return refused if refused is not None else self.answer(seen, key)

    def answer(self, seen: Any, key: str) -> Any:
        raise NotImplementedError


class FakeTranscriptions(_OpenAIAudio):
    """`POST /v1/audio/transcriptions`; answers `{"text": "heard <ms> ms of <model>"}`."""

    path = "/v1/audio/transcriptions"

    def answer(self, seen: Any, key: str) -> Any:
        ctype = seen.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return openai_error(400, "Content-Type must be multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + seen.body
        )
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload if isinstance(payload, bytes) else b""
        if "model" not in fields or "file" not in fields:
            return openai_error(400, "you must provide a model parameter")
        try:
            with wave.open(io.BytesIO(fields["file"])) as w:
                ms = w.getnframes() * 1000 // w.getframerate()
        except (wave.Error, EOFError):
            return openai_error(400, "Invalid file format.")
        language = fields.get("language", b"").decode()
        return json_reply(200, {"text": f" heard {ms} ms of {fields['model'].decode()} {language} "})


class FakeSpeech(_OpenAIAudio):
    """`POST /v1/audio/speech`; streams 60 ms of tone per character, PCM or WAV."""

    path = "/v1/audio/speech"

    def answer(self, seen: Any, key: str) -> Any:
        body = seen.json
        if not isinstance(body, dict) or not body.get("input") or not body.get("voice"):
            return openai_error(400, "input and voice are required")
        audio = tone_pcm(60 * len(body["input"]))
        steps: list[Any] = []
        if body.get("response_format") == "wav":
            header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
            header += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to skip, as some servers send
            header += b"data" + struct.pack("<I", 0xFFFFFFFF)
            steps.append(header[:7])  # the header split across writes
            steps.append(header[7:])
        pieces = [audio[i : i + 4801] for i in range(0, len(audio), 4801)]  # odd sizes: split samples
        if key == "drop":
            steps += [pieces[0], Pause(0.05), Cut()]
        else:
            for piece in pieces:
                steps += [piece, Pause(0.005)]
        return Reply(200, steps, {}, "audio/wav" if body.get("response_format") == "wav" else "audio/pcm")


# ---------------------------------------------------------------------------------- WebSockets


@dataclass
class WsFake:
    """A WebSocket fake; `connections` records each handshake's path and headers. The API key is
    read from the header `key_header` (less `key_prefix`); `refuse` may deny the handshake."""

    key_header: ClassVar[str]
    key_prefix: ClassVar[str] = ""

    server: Server | None = None
    connections: list[tuple[str, Headers]] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    # The next connection dies mid-stream (then the fake behaves again).
    drop_next: bool = False

    def dropping(self, key: str) -> bool:
        if key == "drop" or self.drop_next:
            self.drop_next = False
            return True
        return False

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def key(self, headers: Headers | None) -> str:
        return headers.get(self.key_header, "").removeprefix(self.key_prefix) if headers else ""

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connections.append((request.path, request.headers))
        return self.refuse(self.key(request.headers))

    def refuse(self, key: str) -> Response | None:
        return None

    async def handler(self, ws: ServerConnection) -> None:
        try:
            await self.serve(ws, self.key(ws.request.headers if ws.request else None))
        except ConnectionClosed:
            return

    async def serve(self, ws: ServerConnection, key: str) -> None:
        raise NotImplementedError


def _deny(status: int, body: str) -> Response:
    return Response(
        status, HTTPStatus(status).phrase, Headers([("Content-Type", "application/json")]), body.encode()
    )


class FakeDeepgram(WsFake):
    """`wss://…/v1/listen`: `Authorization: Token <key>` checked at the handshake (401)."""

    key_header = "Authorization"
    key_prefix = "Token "

    def refuse(self, key: str) -> Response | None:
        if key == "bad":
            return _deny(401, '{"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}')
        if key == "limited":
            return _deny(429, '{"err_code": "TOO_MANY_REQUESTS", "err_msg": "Too many requests."}')
        return None

    async def serve(self, ws: ServerConnection, key: str) -> None:
        audio_bytes = 0
        frames = 0
        drop = self.dropping(key)
        async for message in ws:
            if isinstance(message, bytes):
                audio_bytes += len(message)
                frames += 1
                if drop and frames == 3:
                    await ws.close(1011, "NET-0001: internal error")
                    return
                if frames % 5 == 0:
                    await ws.send(json.dumps(_results(f"partial {audio_bytes // 32} ms", final=False)))
                continue
            data = json.loads(message)
            self.received.append(data)
            if data.get("type") == "CloseStream":
                if key == "slow":  # never answers: the client times out and leaves
                    await ws.wait_closed()
                    return
                ms = audio_bytes // 32  # 16 kHz PCM16: 32 bytes a millisecond
                await ws.send(json.dumps(_results(f"heard {ms} ms", final=True)))
                await ws.send(json.dumps({"type": "Metadata", "request_id": "fake", "duration": ms / 1000}))
                await ws.close(1000)
                return


def _results(text: str, *, final: bool) -> dict[str, Any]:
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.0,
        "start": 0.0,
        "is_final": final,
        "speech_final": final,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.99, "words": []}]},
        "metadata": {"request_id": "fake"},
    }


class FakeElevenLabs(WsFake):
    """`wss://…/v1/text-to-speech/{voice}/stream-input`: `xi-api-key` checked after the upgrade,
    as ElevenLabs does it: an error message, then a 1008 close."""

    key_header = "xi-api-key"

    async def serve(self, ws: ServerConnection, key: str) -> None:
        if key in ("bad", "limited"):
            error = "invalid_api_key" if key == "bad" else "quota_exceeded"
            await ws.send(json.dumps({"message": "Refused.", "error": error, "code": 1008}))
            await ws.close(1008, error)
            return
        text = ""
        drop = self.dropping(key)
        async for message in ws:
            data = json.loads(message)
            self.received.append(data)
            piece = data.get("text", "")
            if piece == "":  # end of input
                for chunk in _speak(text.strip()):
                    if drop:
                        await ws.send(json.dumps(chunk))
                        await ws.close(1011, "internal")
                        return
                    await ws.send(json.dumps(chunk))
                    await asyncio.sleep(0.005)
                await ws.send(json.dumps({"isFinal": True}))
                await ws.close(1000)
                return
            if piece.strip():
                text += piece


def _speak(text: str) -> list[dict[str, Any]]:
    """One message per word: its audio (60 ms a character) and the characters' alignment."""
    out = []
    for word in text.split(" "):
        chars = list(word + " ")
        pcm = tone_pcm(60 * len(chars))
        out.append(
            {
                "audio": base64.b64encode(pcm).decode(),
                "isFinal": None,
                "alignment": {
                    "chars": chars,
                    "charStartTimesMs": [60 * i for i in range(len(chars))],
                    "charDurationsMs": [60] * len(chars),
                },
                "normalizedAlignment": None,
            }
        )
    return out


W = TypeVar("W", bound=WsFake)


@contextlib.asynccontextmanager
async def running(fake: W) -> AsyncIterator[W]:
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request) as server:
        fake.server = server
        yield fake
