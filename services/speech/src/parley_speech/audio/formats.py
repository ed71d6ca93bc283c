"""Audio formats: PCM16, G.711 μ-law (by table), and whole-utterance containers (WAV by the
standard library, WebM/Ogg Opus by PyAV). Inside the worker audio is float32 mono in [-1, 1].
"""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt

from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import AudioEncoding, InputFormat, OutputFormat

Samples = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------------ G.711 μ-law


def _mulaw_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


MULAW_DECODE = _mulaw_decode_table()


def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    return MULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """The reference G.711 encoder (Sun's g711.c, as audioop and telephony gear do it)."""
    v = pcm.astype(np.int32) >> 2
    negative = v < 0
    v = np.minimum(np.where(negative, -v, v), 8159) + (0x84 >> 2)
    # Segment: the first of 0x3F, 0x7F, … 0x1FFF that is >= v.
    seg = np.searchsorted(_MULAW_SEG_END, v)
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> (seg + 1)) & 0x0F))
    mask = np.where(negative, 0x7F, 0xFF)
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


_MULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


# ------------------------------------------------------------------------------------------ PCM16


def pcm16_to_float(data: bytes) -> Samples:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: Samples) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")


def encode_output(samples: Samples, fmt: OutputFormat) -> bytes:
    """float32 mono at `fmt.sample_rate` → the bytes of `fmt`."""
    pcm = float_to_pcm16(samples)
    if fmt.encoding is AudioEncoding.MULAW:
        return mulaw_encode(pcm)
    return pcm.tobytes()


# ------------------------------------------------------------------------------- streamed input


def bad_audio(fmt: str, detail: str) -> ParleyError:
    return ParleyError(Codes.SPEECH_UNDECODABLE_AUDIO, params={"format": fmt, "detail": detail})


def decode_chunk(data: bytes, fmt: InputFormat) -> Samples:
    """One streamed chunk (pcm16 or μ-law) → float32 at the format's rate."""
    if fmt.encoding is AudioEncoding.PCM16:
        if len(data) % 2:
            raise bad_audio(fmt.label, f"a PCM16 chunk has an odd number of bytes ({len(data)})")
        return pcm16_to_float(data)
    if fmt.encoding is AudioEncoding.MULAW:
        return mulaw_decode(data).astype(np.float32) / 32768.0
    raise bad_audio(fmt.label, "container formats are decoded per utterance, not per chunk")


def looks_like_noise_bytes(samples: Samples) -> bool:
    """Garbage bytes read as PCM16 are full-scale white noise; speech and silence are not.

    Used to refuse a stream that is clearly not PCM (a file's header, random bytes) with an
    `error` instead of running it through recognition as loud noise.
    """
    if samples.size < 160:
        return False
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    # Uniform random int16 has RMS ≈ 0.577; loud speech peaks well below 0.3 RMS over 10 ms+.
    return rms > 0.45


# --------------------------------------------------------------------------- container uploads


def decode_container(data: bytes, fmt: InputFormat) -> tuple[Samples, int]:
    """A whole WAV / WebM-Opus / Ogg-Opus file → (float32 mono, sample rate)."""
    if not data:
        raise bad_audio(fmt.label, "the upload is empty")
    if fmt.encoding is AudioEncoding.WAV:
        return _decode_wav(data, fmt.label)
    if fmt.encoding in (AudioEncoding.WEBM_OPUS, AudioEncoding.OGG_OPUS):
        return _decode_av(data, "webm" if fmt.encoding is AudioEncoding.WEBM_OPUS else "ogg", fmt.label)
    raise bad_audio(fmt.label, "not a container format")


def _decode_wav(data: bytes, label: str) -> tuple[Samples, int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError) as exc:
        raise bad_audio(label, f"not a WAV file ({exc})") from exc
    if width != 2:
        raise bad_audio(label, f"WAV must be 16-bit PCM, not {8 * width}-bit")
    if not 8000 <= rate <= 48000:
        raise bad_audio(label, f"WAV sample rate {rate} is out of range")
    usable = len(frames) - len(frames) % (2 * channels)
    samples = pcm16_to_float(frames[:usable])
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
    return samples, rate


def _decode_av(data: bytes, container: str, label: str) -> tuple[Samples, int]:
    import av  # imported here: only uploads need FFmpeg

    out: list[Samples] = []
    rate = 48000
    try:
        with av.open(io.BytesIO(data), mode="r", format=container) as box:
            if not box.streams.audio:
                raise bad_audio(label, "the file has no audio track")
            stream = box.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or 48000)
            rate = resampler.rate or 48000
            for frame in box.decode(stream):
                for converted in resampler.resample(frame):
                    out.append(converted.to_ndarray().reshape(-1).astype(np.float32))
            for converted in resampler.resample(None):
                out.append(converted.to_ndarray().reshape(-1).astype(np.float32))
    except ParleyError:
        raise
    except (av.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise bad_audio(label, f"not a valid {container} file ({type(exc).__name__})") from exc
    if not out:
        raise bad_audio(label, "the file holds no audio")
    return np.concatenate(out), int(rate)


def encode_webm_opus(samples: Samples, rate: int, container: str = "webm") -> bytes:
    """float32 mono → a WebM (or Ogg) Opus file, as a browser's MediaRecorder makes. For tests,
    examples and benchmarks."""
    import av
    import soxr

    pcm = soxr.resample(samples, rate, 48000) if rate != 48000 else samples
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as box:
        stream = box.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame_size = 960
        pcm16 = float_to_pcm16(np.asarray(pcm, dtype=np.float32))
        for i in range(0, len(pcm16), frame_size):
            block = pcm16[i : i + frame_size]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = i
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return buf.getvalue()


def wav_bytes(samples: Samples, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_pcm16(samples).tobytes())
    return buf.getvalue()
