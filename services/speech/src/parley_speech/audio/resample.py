"""Sample-rate conversion with soxr: whole buffers, and streams chunk by chunk (no clicks at
chunk borders, which resampling each chunk on its own would make)."""

from __future__ import annotations

import numpy as np
import soxr

from parley_speech.audio.formats import Samples


def resample(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Feed chunks in order; `flush()` at the end returns the resampler's tail."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self._stream = (
            None if from_rate == to_rate else soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32")
        )

    def push(self, samples: Samples) -> Samples:
        if self._stream is None:
            return samples.astype(np.float32, copy=False)
        return np.asarray(self._stream.resample_chunk(samples.astype(np.float32, copy=False)), np.float32)

    def flush(self) -> Samples:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), np.float32)
