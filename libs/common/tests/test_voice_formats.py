"""How a `/realtime` handshake chooses a voice session's formats, and upload detection."""

from __future__ import annotations

import pytest

from parley_common.errors import Codes
from parley_common.speech_contract import AudioEncoding, InputFormat, OutputFormat
from parley_common.voice_formats import DirectiveError, detect_container, parse_handshake_voice


def test_text_channels_without_audio_fields_are_text_sessions() -> None:
    for channel in (None, "web-text", "phone", "mobile"):
        parsed = parse_handshake_voice(channel, "plain text, no markdown; be brief")
        assert parsed.formats is None
        assert parsed.render_directive == "plain text, no markdown; be brief"  # untouched


def test_voice_channels_get_the_default_formats() -> None:
    for channel in ("web-voice", "mobile-voice"):
        parsed = parse_handshake_voice(channel, None)
        assert parsed.formats is not None
        assert parsed.formats.input == InputFormat(encoding=AudioEncoding.PCM16, sample_rate=16000)
        assert parsed.formats.output is OutputFormat.PCM16_24000
        assert parsed.render_directive is None
    assert parse_handshake_voice("web-voice", "speak slowly").render_directive == "speak slowly"


@pytest.mark.parametrize(
    ("directive", "encoding", "rate", "output"),
    [
        ("audio_in=pcm16/8000", "pcm16", 8000, OutputFormat.PCM16_24000),
        ("audio_in=pcm16/48000;audio_out=pcm16/16000", "pcm16", 48000, OutputFormat.PCM16_16000),
        ("AUDIO_IN = MULAW/8000 ; audio_out=mulaw/8000", "mulaw", 8000, OutputFormat.MULAW_8000),
        ("audio_out=pcm16/24000", "pcm16", 16000, OutputFormat.PCM16_24000),
        ("audio_in=pcm16/44100;audio_out=pcm16/24000", "pcm16", 44100, OutputFormat.PCM16_24000),
    ],
)
def test_audio_fields_choose_formats_on_any_channel(
    directive: str, encoding: str, rate: int, output: OutputFormat
) -> None:
    parsed = parse_handshake_voice("web-text", directive)
    assert parsed.formats is not None
    assert (parsed.formats.input.encoding.value, parsed.formats.input.sample_rate) == (encoding, rate)
    assert parsed.formats.output is output
    assert parsed.render_directive is None  # nothing else was in it


def test_the_rest_of_the_directive_stays_for_the_llm() -> None:
    parsed = parse_handshake_voice("web-voice", "be brief;audio_in=mulaw/8000; no lists")
    assert parsed.formats is not None and parsed.formats.input.encoding is AudioEncoding.MULAW
    assert parsed.render_directive == "be brief; no lists"
    # A part that merely mentions audio is text.
    kept = parse_handshake_voice("web-text", "audio only = no; answer in English")
    assert kept.formats is None and kept.render_directive == "audio only = no; answer in English"


@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("audio_in=pcm16", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_in=", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_in=pcm16/16000/1", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_in=pcm16/abc", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_in=pcm16/16000;audio_in=pcm16/8000", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_rate=16000", Codes.REALTIME_BAD_RENDER_DIRECTIVE),
        ("audio_in=pcm16/11025", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),
        ("audio_in=mulaw/16000", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),
        ("audio_in=opus/48000", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),
        ("audio_in=wav/16000", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),  # uploads need no declaration
        ("audio_out=pcm16/48000", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),
        ("audio_out=mulaw/16000", Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT),
    ],
)
def test_malformed_or_unsupported_fields_are_refused_precisely(directive: str, code: object) -> None:
    with pytest.raises(DirectiveError) as refused:
        parse_handshake_voice("web-voice", directive)
    assert refused.value.code is code
    if code is Codes.REALTIME_UNSUPPORTED_AUDIO_FORMAT:
        params = refused.value.params
        assert "supported" in params and params["direction"] in ("input", "output")


def test_signal_data_announces_the_formats_and_uploads() -> None:
    parsed = parse_handshake_voice("web-voice", "audio_in=mulaw/8000;audio_out=mulaw/8000")
    assert parsed.formats is not None
    assert parsed.formats.signal_data() == {
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {"encoding": "mulaw", "sample_rate": 8000},
        "uploads": ["wav", "webm_opus", "ogg_opus"],
    }


def test_uploads_are_recognised_by_their_header() -> None:
    assert detect_container(b"RIFF\x24\x00\x00\x00WAVEfmt ") is AudioEncoding.WAV
    assert detect_container(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") is AudioEncoding.WEBM_OPUS
    assert detect_container(b"OggS\x00\x02") is AudioEncoding.OGG_OPUS
    assert detect_container(b"RIFF\x24\x00\x00\x00AVI ") is None
    assert detect_container(b"\x00\x01" * 8) is None
    assert detect_container(b"") is None
