"""OpenAI-compatible audio endpoints (OpenAI, Groq, self-hosted servers such as speaches):

- STT `POST {base}/audio/transcriptions`, multipart: `file` (a WAV of the utterance), `model`,
  `response_format=json`, `language` (ISO-639-1) → `{"text": "..."}`.
- TTS `POST {base}/audio/speech`, JSON `{model, input, voice, response_format}` → the audio,
  streamed. `pcm` is raw 24 kHz PCM16 (OpenAI); servers without `pcm` (Groq) send `wav`, whose
  header is read off the stream.

Errors are OpenAI's `{"error": {"message", "type", "code"}}` with an HTTP status; each maps to a
`speech.engine_*` code. The base URL is a setting, never agent config (a tenant must not point a
worker at internal addresses).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import TypedDict, Unpack

import httpx

from parley_speech.audio.formats import Samples, pcm16_to_float, wav_bytes
from parley_speech.engines import errors
from parley_speech.engines.base import STT_RATE, STTEngine, TtsChunk, TTSEngine


def _language(language: str | None) -> str | None:
    return language.split("-")[0].lower() if language else None


class Endpoint(TypedDict):
    """Where an OpenAI-compatible audio API is and how it is reached: the keywords both engines'
    constructors share (`OpenAIAudio.__init__`)."""

    client: httpx.AsyncClient
    base_url: str
    api_key: str


class OpenAIAudio:
    """What the STT and TTS engines of one OpenAI-compatible API share: its name, client and URL."""

    def __init__(self, name: str, *, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.name = name
        self.client, self.base_url, self.api_key = client, base_url.rstrip("/"), api_key

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


class OpenAISTT(OpenAIAudio, STTEngine):
    def __init__(self, name: str, *, model: str, **endpoint: Unpack[Endpoint]) -> None:
        super().__init__(name, **endpoint)
        self.model = model

    async def recognize(self, samples: Samples, *, language: str | None = None) -> str:
        if samples.size < STT_RATE // 10:
            return ""
        data: dict[str, str] = {"model": self.model, "response_format": "json"}
        if lang := _language(language):
            data["language"] = lang
        try:
            response = await self.client.post(
                f"{self.base_url}/audio/transcriptions",
                headers=self.auth,
                data=data,
                files={"file": ("utterance.wav", wav_bytes(samples, STT_RATE), "audio/wav")},
            )
        except httpx.TimeoutException as exc:
            raise errors.timeout(self.name) from exc
        except httpx.HTTPError as exc:
            raise errors.unreachable(self.name, exc) from exc
        if response.status_code != 200:
            raise errors.from_status(self.name, response.status_code, response.text)
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.protocol(self.name, 'the transcription is not {"text": ...}') from exc
        if not isinstance(text, str):
            raise errors.protocol(self.name, "the transcription text is not a string")
        return text.strip()


class OpenAITTS(OpenAIAudio, TTSEngine):
    def __init__(
        self, name: str, *, model: str, voice: str, response_format: str = "pcm", **endpoint: Unpack[Endpoint]
    ) -> None:
        super().__init__(name, **endpoint)
        self.model, self.voice, self.response_format = model, voice, response_format
        self.sample_rate = 24000

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None, model: str | None = None
    ) -> AsyncIterator[TtsChunk]:
        body = {
            "model": model or self.model,
            "input": text,
            "voice": voice or self.voice,
            "response_format": self.response_format,
        }
        headers = self.auth
        reader = _PcmReader(self.name, self.response_format)
        try:
            async with self.client.stream(
                "POST", f"{self.base_url}/audio/speech", json=body, headers=headers
            ) as response:
                if response.status_code != 200:
                    body_text = (await response.aread()).decode("utf-8", "replace")
                    raise errors.from_status(self.name, response.status_code, body_text)
                async for data in response.aiter_bytes():
                    pcm = reader.feed(data)
                    if reader.rate:
                        self.sample_rate = reader.rate
                    if pcm:
                        yield TtsChunk(pcm16_to_float(pcm))
        except httpx.TimeoutException as exc:
            raise errors.timeout(self.name) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise errors.disconnected(self.name, type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise errors.unreachable(self.name, exc) from exc
        if not reader.header_done:
            raise errors.protocol(self.name, "the speech response is not a WAV file")
        yield TtsChunk(pcm16_to_float(reader.tail()), len(text))


class _PcmReader:
    """Raw PCM16 (`pcm`) passes through; `wav` has its header (up to the `data` chunk) removed.
    Odd bytes wait for their other half."""

    def __init__(self, engine: str, response_format: str) -> None:
        self.engine = engine
        self.wav = response_format == "wav"
        self.header_done = not self.wav
        self.rate: int | None = None if self.wav else 24000
        self._buf = b""

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        if not self.header_done and not self._parse_header():
            return b""
        usable = len(self._buf) - len(self._buf) % 2
        out, self._buf = self._buf[:usable], self._buf[usable:]
        return out

    def tail(self) -> bytes:
        return b""  # an odd last byte is no sample

    def _parse_header(self) -> bool:
        buf = self._buf
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise errors.protocol(self.engine, "not a RIFF/WAVE stream")
        pos = 12
        while pos + 8 <= len(buf):
            chunk_id, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
            if chunk_id == b"fmt " and pos + 8 + 16 <= len(buf):
                channels, rate = struct.unpack("<HI", buf[pos + 10 : pos + 16])
                bits = struct.unpack("<H", buf[pos + 22 : pos + 24])[0]
                if channels != 1 or bits != 16:
                    raise errors.protocol(self.engine, f"{channels} channels of {bits} bits, not mono PCM16")
                self.rate = rate
            if chunk_id == b"data":
                self._buf = buf[pos + 8 :]
                self.header_done = True
                return True
            pos += 8 + size + (size & 1)
        return False
