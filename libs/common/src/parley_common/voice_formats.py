"""How a `/realtime` client chooses its audio formats, and how uploads are recognised.

The Kivox spec has no format field, so a voice session is chosen by the handshake:

- `channel` `web-voice` or `mobile-voice` opens a voice session with the default formats, input
  PCM16 16 kHz and output PCM16 24 kHz;
- `render_directive` may carry audio fields, `;`-separated: `audio_in=<encoding>/<rate>` and
  `audio_out=<encoding>/<rate>` (e.g. `audio_in=mulaw/8000;audio_out=mulaw/8000`). A directive with
  an audio field makes any channel a voice session. The other parts of the directive (its text
  without the audio fields) stay the render directive the LLM sees.

Input: `pcm16` at 8000, 16000, 24000, 44100 or 48000 Hz, or `mulaw/8000`. Output: `pcm16/24000`,
`pcm16/16000`, `mulaw/8000`. A malformed field is `realtime.bad_render_directive`, a format outside
these `realtime.unsupported_audio_format` (both `handshake_error` reasons).

Whole-utterance uploads (`input_audio`) need no declaration: WAV, WebM/Opus and Ogg/Opus are
recognised by their first bytes (`detect_container`); anything else is raw audio in the input format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley_common.errors import Codes, ErrorCode
from parley_common.speech_contract import PCM16_INPUT_RATES, AudioEncoding, InputFormat, OutputFormat

VOICE_CHANNELS = frozenset({"web-voice", "mobile-voice"})
UPLOAD_ENCODINGS = (AudioEncoding.WAV, AudioEncoding.WEBM_OPUS, AudioEncoding.OGG_OPUS)
_FIELDS = ("audio_in", "audio_out")
_VALUE = re.compile(r"^([a-z0-9_]+)/([0-9]{1,6})$")
SUPPORTED_INPUT = ", ".join([f"pcm16/{r}" for r in PCM16_INPUT_RATES] + ["mulaw/8000"])
SUPPORTED_OUTPUT = ", ".join(f"{f.encoding.value}/{f.sample_rate}" for f in OutputFormat)


class VoiceFormats(BaseModel):
    """The audio formats of one voice session (what the `audio_format` signal announces)."""

    model_config = ConfigDict(extra="forbid")

    input: InputFormat = Field(default_factory=InputFormat)
    output: OutputFormat = OutputFormat.PCM16_24000

    def signal_data(self) -> dict[str, Any]:
        return {
            "input": {"encoding": self.input.encoding.value, "sample_rate": self.input.sample_rate},
            "output": {"encoding": self.output.encoding.value, "sample_rate": self.output.sample_rate},
            "uploads": [e.value for e in UPLOAD_ENCODINGS],
        }


class DirectiveError(Exception):
    def __init__(self, code: ErrorCode, params: dict[str, Any]) -> None:
        super().__init__(code.code)
        self.code, self.params = code, params


@dataclass(frozen=True)
class HandshakeVoice:
    formats: VoiceFormats | None  # None: a text session
    render_directive: str | None  # what is left for the LLM


def parse_handshake_voice(channel: str | None, render_directive: str | None) -> HandshakeVoice:
    """The session's formats from the handshake's channel and render directive (module doc)."""
    found: dict[str, str] = {}
    rest: list[str] = []
    parts = render_directive.split(";") if render_directive else []
    for part in parts:
        key, sep, value = part.partition("=")
        name = key.strip().lower()
        if not sep or not name.startswith("audio_") or " " in name:
            rest.append(part)
            continue
        if name not in _FIELDS:
            raise DirectiveError(
                Codes.REALTIME_BAD_RENDER_DIRECTIVE,
                {"detail": f"unknown audio field {name!r} (audio_in, audio_out)"},
            )
        if name in found:
            raise DirectiveError(Codes.REALTIME_BAD_RENDER_DIRECTIVE, {"detail": f"{name} given twice"})
        found[name] = value.strip().lower()
    if not found and (channel or "") not in VOICE_CHANNELS:
        return HandshakeVoice(None, render_directive)
    formats = VoiceFormats()
    if "audio_in" in found:
        encoding, rate = _split("audio_in", found["audio_in"])
        try:
            formats.input = InputFormat(encoding=AudioEncoding(encoding), sample_rate=rate)
            if formats.input.is_container:
                raise ValueError("container")
        except (ValueError, ValidationError):
            raise DirectiveError(
                Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT,
                {"direction": "input", "format": f"{encoding}/{rate}", "supported": SUPPORTED_INPUT},
            ) from None
    if "audio_out" in found:
        encoding, rate = _split("audio_out", found["audio_out"])
        try:
            formats.output = OutputFormat(f"{encoding}_{rate}")
        except ValueError:
            raise DirectiveError(
                Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT,
                {"direction": "output", "format": f"{encoding}/{rate}", "supported": SUPPORTED_OUTPUT},
            ) from None
    left = ";".join(rest).strip() if found else render_directive
    return HandshakeVoice(formats, left or None)


def _split(name: str, value: str) -> tuple[str, int]:
    match = _VALUE.match(value)
    if match is None:
        raise DirectiveError(
            Codes.REALTIME_BAD_RENDER_DIRECTIVE,
            {"detail": f"{name} must be <encoding>/<sample rate>, e.g. pcm16/16000 (got {value[:40]!r})"},
        )
    return match.group(1), int(match.group(2))


def detect_container(data: bytes) -> AudioEncoding | None:
    """WAV, WebM (Matroska) or Ogg by their magic bytes; None: raw audio in the input format."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return AudioEncoding.WAV
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return AudioEncoding.WEBM_OPUS
    if data[:4] == b"OggS":
        return AudioEncoding.OGG_OPUS
    return None
