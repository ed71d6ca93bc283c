"""ElevenLabs streaming TTS over its `stream-input` WebSocket.

Wire format (ElevenLabs' docs; LiveKit's and Pipecat's plugins speak the same):
- Connect to `{base}/text-to-speech/{voice_id}/stream-input?model_id=…&output_format=pcm_24000`
  with the header `xi-api-key`.
- Send `{"text": " ", "voice_settings": …, "generation_config": {"chunk_length_schedule": […]}}`
  first, then text as `{"text": "… "}` (each piece ends with a space; `"flush": true` forces
  generation of what was sent), and `{"text": ""}` to end the input.
- Receive `{"audio": <base64 PCM16>, "isFinal": false, "alignment": {"chars": […],
  "charStartTimesMs": […], "charDurationsMs": […]}, "normalizedAlignment": …}` messages, then
  `{"isFinal": true}`, and the server closes. Errors arrive as `{"message", "error", "code"}`
  followed by a close (1008 for a bad key or quota).

`alignment.chars` counts the characters each chunk speaks, so chunks carry exact text offsets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any, Unpack
from urllib.parse import quote, urlencode

import numpy as np
from websockets.exceptions import ConnectionClosed

from parley_common.errors import Codes, ParleyError
from parley_speech.audio.formats import pcm16_to_float
from parley_speech.engines import errors
from parley_speech.engines.base import TtsChunk, TTSEngine, VoiceChoice
from parley_speech.engines.websocket import SocketOptions, WebSocketEngine

SAMPLE_RATE = 24000
CHUNK_SCHEDULE = [50, 90, 120, 150]


class ElevenLabsTTS(TTSEngine, WebSocketEngine):
    name = "elevenlabs"
    sample_rate = SAMPLE_RATE
    max_message_bytes = 2**24

    def __init__(self, *, model: str, voice: str, **socket: Unpack[SocketOptions]) -> None:
        WebSocketEngine.__init__(self, **socket)
        self.url = self.url.rstrip("/")
        self.model, self.voice = model, voice

    def stream_url(self, choice: VoiceChoice) -> str:
        voice, language = choice.get("voice") or self.voice, choice.get("language")
        params = {"model_id": choice.get("model") or self.model, "output_format": f"pcm_{SAMPLE_RATE}"}
        if language:
            params["language_code"] = language.split("-")[0].lower()
        return f"{self.url}/text-to-speech/{quote(voice, safe='')}/stream-input?{urlencode(params)}"

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None, model: str | None = None
    ) -> AsyncIterator[TtsChunk]:
        async def one() -> AsyncIterator[str]:
            yield text

        async for chunk in self.stream(one(), voice=voice, language=language, model=model):
            yield chunk

    async def stream(
        self, texts: AsyncIterator[str], **choice: Unpack[VoiceChoice]
    ) -> AsyncIterator[TtsChunk]:
        ws = await self.open_socket(self.stream_url(choice), {"xi-api-key": self.api_key})
        sent = 0  # characters sent so far: the alignment counts against them
        sender_error: list[BaseException] = []

        async def send() -> None:
            nonlocal sent
            try:
                init = {"text": " ", "generation_config": {"chunk_length_schedule": CHUNK_SCHEDULE}}
                await ws.send(json.dumps(init))
                async for piece in texts:
                    if piece:
                        await ws.send(json.dumps({"text": piece if piece.endswith(" ") else piece + " "}))
                        sent += len(piece)
                await ws.send(json.dumps({"text": " ", "flush": True}))
                await ws.send(json.dumps({"text": ""}))
            except ConnectionClosed:
                pass  # the receiver reports why
            except Exception as exc:  # the text source failed: stop, and say so
                sender_error.append(exc)
                await ws.close()

        sender = asyncio.create_task(send())
        messages = self.messages(
            ws,
            timeout_s=lambda: self.read_timeout_s,
            ends_normally=lambda code: code == 1000 and sender.done(),
            skip_binary=False,
        )
        spoken = 0
        try:
            async with ws:
                async for data in messages:
                    if data.get("error"):
                        raise _error_message(self.name, data)
                    audio = data.get("audio")
                    if audio:
                        try:
                            pcm = base64.b64decode(audio, validate=True)
                        except (binascii.Error, ValueError) as exc:
                            raise errors.protocol(self.name, "audio is not base64") from exc
                        alignment = data.get("alignment") or data.get("normalizedAlignment")
                        if isinstance(alignment, dict) and isinstance(alignment.get("chars"), list):
                            spoken += len(alignment["chars"])
                        usable = len(pcm) - len(pcm) % 2
                        yield TtsChunk(
                            pcm16_to_float(pcm[:usable]), min(spoken, max(sent, 1)) if spoken else None
                        )
                    if data.get("isFinal"):
                        break
        finally:
            sender.cancel()
            await messages.aclose()
        if sender_error:
            raise sender_error[0]
        yield TtsChunk(np.zeros(0, np.float32), sent)


def _error_message(engine: str, data: dict[str, Any]) -> ParleyError:
    kind = str(data.get("error", "")).lower()
    errors.log.warning(
        "speech.provider_error", engine=engine, error=kind, message=str(data.get("message"))[:200]
    )
    if "api_key" in kind or "auth" in kind or "unauthor" in kind:
        return ParleyError(Codes.SPEECH_ENGINE_AUTH_FAILED, params={"engine": engine})
    if "quota" in kind or "rate" in kind or "limit" in kind:
        return ParleyError(Codes.SPEECH_ENGINE_RATE_LIMITED, params={"engine": engine})
    return ParleyError(
        Codes.SPEECH_ENGINE_REJECTED, params={"engine": engine, "detail": kind[:80] or "error"}
    )
