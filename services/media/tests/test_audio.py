"""The audio conversions of a call: the microphone's frames to the session's chunks, the session's
PCM to paced 48 kHz frames, and the formats an `audio_format` signal may announce."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from parley_media.audio import MicEncoder, PcmFormat, PlayoutTrack, parse_format

from .fakes import rms, tone


def opus_decoded_frame(pts: int, freq: float = 440.0) -> av.AudioFrame:
    """What aiortc's Opus decoder yields: s16, stereo, 48 kHz, 20 ms."""
    t = (pts + np.arange(960)) / 48000
    mono = (np.sin(2 * np.pi * freq * t) * 10000).astype("<i2")
    frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.pts = 48000, pts
    return frame


def test_microphone_frames_become_20_ms_chunks_of_16_khz_mono() -> None:
    encoder = MicEncoder(PcmFormat(16000), chunk_ms=20)
    chunks = [c for i in range(50) for c in encoder.push(opus_decoded_frame(i * 960))]
    assert len(chunks) in (48, 49, 50)  # the resampler holds back a few samples
    assert {len(c) for c in chunks} == {640}
    assert rms(b"".join(chunks[5:])) > 5000  # the tone survives, at its level


def test_other_input_rates_and_chunk_sizes() -> None:
    encoder = MicEncoder(PcmFormat(8000), chunk_ms=40)
    chunks = [c for i in range(20) for c in encoder.push(opus_decoded_frame(i * 960))]
    assert chunks and {len(c) for c in chunks} == {640}  # 40 ms at 8 kHz


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"encoding": "pcm16", "sample_rate": 16000}, PcmFormat(16000)),
        ("pcm16/24000", PcmFormat(24000)),
        ("pcm16_16000", PcmFormat(16000)),
        ({"encoding": "mulaw", "sample_rate": 8000}, None),
        ({"encoding": "pcm16", "sample_rate": 12345}, None),
        ({"encoding": "pcm16", "sample_rate": "x"}, None),
        (None, None),
        (42, None),
    ],
)
def test_announced_formats(value: object, expected: PcmFormat | None) -> None:
    assert parse_format(value) == expected


async def test_playout_is_paced_48_khz_frames_with_silence_between() -> None:
    track = PlayoutTrack(PcmFormat(24000))
    track.push(tone(440, 100))  # 100 ms at 24 kHz
    assert 95 <= track.queued_ms <= 100
    started = time.monotonic()
    frames = [await track.recv() for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(f.sample_rate == 48000 and f.samples == 960 and f.format.name == "s16" for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(10)]
    assert elapsed >= 0.17  # 9 frames after the first are each due 20 ms later: never a burst
    pcm = [f.to_ndarray().tobytes() for f in frames]
    assert rms(b"".join(pcm[:4])) > 3000 and rms(b"".join(pcm[6:])) == 0  # the tone, then silence
    track.stop()


def test_playout_is_bounded_and_flushed() -> None:
    track = PlayoutTrack(PcmFormat(24000), max_ms=1000)
    track.push(tone(440, 3000))
    assert track.queued_ms <= 1000 and track.dropped_ms >= 1900
    assert track.flush() > 900 and track.queued_ms == 0
    # An odd byte is carried to the next push, never misaligning the samples.
    track.push(b"\x01")
    track.push(b"\x00" + tone(440, 20))
    assert len(track._buffer) % 2 == 0
    track.stop()
