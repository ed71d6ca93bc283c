"""Audio formats: μ-law against G.711 reference values, PCM16 framing, WAV and WebM/Ogg Opus
containers (made with PyAV as a browser's MediaRecorder would), resampling."""

from __future__ import annotations

import numpy as np
import pytest

from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import InputFormat, OutputFormat
from parley_speech.audio.formats import (
    decode_chunk,
    decode_container,
    encode_output,
    encode_webm_opus,
    looks_like_noise_bytes,
    mulaw_decode,
    mulaw_encode,
    wav_bytes,
)
from parley_speech.audio.resample import StreamResampler, resample


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def test_mulaw_matches_g711_reference_points() -> None:
    # Values of the ITU-T G.711 reference encoder (Sun g711.c, as audioop and telephony gear).
    pcm = np.array([0, -1, 1, 32767, -32768, 1000, -1000, 8031, -8031], dtype=np.int16)
    assert list(mulaw_encode(pcm)) == [0xFF, 0x7E, 0xFF, 0x80, 0x00, 0xCE, 0x4E, 0xA0, 0x20]
    assert list(mulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xCE]))) == [0, 0, 32124, -32124, 988]


def test_mulaw_round_trip_error_is_within_one_quantisation_step() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    back = mulaw_decode(mulaw_encode(pcm)).astype(np.int32)
    step = np.maximum(np.abs(pcm.astype(np.int32)) // 16, 8)  # μ-law steps grow with the level
    assert np.all(np.abs(back - pcm) <= step + 140)  # the clip at ±32124
    assert mulaw_encode(pcm).__len__() == pcm.size


def test_pcm16_chunk_decodes_and_odd_length_is_refused() -> None:
    fmt = InputFormat()
    samples = decode_chunk(np.array([0, 16384, -32768], dtype="<i2").tobytes(), fmt)
    assert samples.tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(ParleyError) as err:
        decode_chunk(b"\x00\x01\x02", fmt)
    assert err.value.code is Codes.SPEECH_UNDECODABLE_AUDIO


def test_random_bytes_read_as_full_scale_noise_but_speechlike_audio_does_not() -> None:
    garbage = np.random.default_rng(7).integers(0, 256, 3200, dtype=np.uint8).tobytes()
    assert looks_like_noise_bytes(decode_chunk(garbage, InputFormat()))
    assert not looks_like_noise_bytes(tone(220, 0.1, 16000, amp=0.6))
    assert not looks_like_noise_bytes(np.zeros(1600, np.float32))


def test_output_encodings() -> None:
    samples = tone(440, 0.02, 24000)
    assert len(encode_output(samples, OutputFormat.PCM16_24000)) == samples.size * 2
    assert len(encode_output(samples, OutputFormat.MULAW_8000)) == samples.size
    assert OutputFormat.MULAW_8000.sample_rate == 8000 and OutputFormat.PCM16_16000.bytes_per_sample == 2


def test_wav_container_round_trip_and_garbage() -> None:
    samples = tone(300, 0.5, 22050)
    decoded, rate = decode_container(wav_bytes(samples, 22050), InputFormat(encoding="wav"))
    assert rate == 22050 and decoded.size == samples.size
    assert np.max(np.abs(decoded - samples)) < 1e-3
    for junk in (b"", b"RIFF" + b"\x00" * 40, b"not a wav file at all" * 10):
        with pytest.raises(ParleyError) as err:
            decode_container(junk, InputFormat(encoding="wav"))
        assert err.value.code is Codes.SPEECH_UNDECODABLE_AUDIO


@pytest.mark.parametrize("container", ["webm_opus", "ogg_opus"])
def test_opus_containers_round_trip(container: str) -> None:
    samples = tone(440, 1.0, 16000)
    data = encode_webm_opus(samples, 16000, "webm" if container == "webm_opus" else "ogg")
    decoded, rate = decode_container(data, InputFormat(encoding=container))
    assert rate == 48000
    assert abs(decoded.size / rate - 1.0) < 0.05
    assert abs(dominant_frequency(decoded, rate) - 440) < 5
    garbage = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    for junk in (garbage, data[:12], wav_bytes(samples, 16000)):
        with pytest.raises(ParleyError) as err:
            decode_container(junk, InputFormat(encoding=container))
        assert err.value.code is Codes.SPEECH_UNDECODABLE_AUDIO


def test_input_format_rules() -> None:
    assert InputFormat(encoding="mulaw", sample_rate=8000).label == "mulaw_8000"
    assert InputFormat(encoding="webm_opus").sample_rate is None
    for bad in ({"encoding": "mulaw", "sample_rate": 16000}, {"encoding": "pcm16", "sample_rate": 11025}):
        with pytest.raises(ValueError):
            InputFormat.model_validate(bad)


def test_streamed_resampling_matches_whole_buffer_and_keeps_pitch() -> None:
    samples = tone(1000, 1.0, 8000)
    whole = resample(samples, 8000, 16000)
    stream = StreamResampler(8000, 16000)
    parts = [stream.push(samples[i : i + 160]) for i in range(0, samples.size, 160)]
    streamed = np.concatenate([*parts, stream.flush()])
    assert abs(streamed.size - whole.size) <= 2
    assert abs(dominant_frequency(streamed, 16000) - 1000) < 3
    assert abs(dominant_frequency(resample(samples, 8000, 24000), 24000) - 1000) < 3
    # Away from the edges, chunked and whole agree sample by sample.
    n = min(streamed.size, whole.size)
    assert np.max(np.abs(streamed[2000 : n - 2000] - whole[2000 : n - 2000])) < 0.02
