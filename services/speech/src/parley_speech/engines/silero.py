"""Silero VAD v6 (the ONNX model faster-whisper ships) through onnxruntime, as a stream of
speech start / end events.

One `SileroModel` per worker (its ONNX session is thread-safe); one `VadStream` per voice session
holding that session's recurrent state. A window is 512 samples at 16 kHz (32 ms), given to the
model with the previous window's last 64 samples as context, exactly as faster-whisper's batched
call does it, so streaming gives the same probabilities.

Hysteresis as in Silero's own VADIterator: speech starts after `start_windows` windows at or above
`threshold`, and ends after `min_silence_ms` below `threshold - 0.15`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from parley_speech.audio.formats import Samples
from parley_speech.engines.base import STT_RATE

WINDOW = 512
CONTEXT = 64
WINDOW_MS = WINDOW * 1000 // STT_RATE  # 32


def default_model_path() -> str:
    import faster_whisper

    return os.path.join(os.path.dirname(faster_whisper.__file__), "assets", "silero_vad_v6.onnx")


class SileroModel:
    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            path or default_model_path(), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def stream(
        self, *, threshold: float = 0.5, start_windows: int = 2, min_silence_ms: int = 96
    ) -> VadStream:
        return VadStream(
            self, threshold=threshold, start_windows=start_windows, min_silence_ms=min_silence_ms
        )

    def probabilities(self, samples: Samples) -> list[float]:
        """Speech probability of each 32 ms window of a whole buffer (16 kHz)."""
        stream = self.stream()
        stream.keep_history = True
        stream.push(samples)
        return stream.history


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "end"]
    at_ms: int  # position in the stream (ms since its first sample)


class VadStream:
    """Not thread-safe: one session's audio, pushed in order (from one thread at a time)."""

    def __init__(
        self, model: SileroModel, *, threshold: float, start_windows: int, min_silence_ms: int
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.start_windows = start_windows
        self.min_silence_windows = max(1, -(-min_silence_ms // WINDOW_MS))
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._windows = 0  # windows processed
        self.speaking = False
        self._above = 0  # consecutive windows above threshold (not speaking)
        self._first_above = 0
        self._below = 0  # consecutive windows below neg_threshold (speaking)
        self._first_below = 0
        self.history: list[float] = []
        self.keep_history = False

    @property
    def position_ms(self) -> int:
        """The end of the last window classified."""
        return self._windows * WINDOW_MS

    @property
    def heard_ms(self) -> int:
        """How far the audio is known for turn-taking: all that was pushed (up to 31 ms past the
        last whole window) while nobody speaks and the last window was below the threshold, else
        `position_ms`. A start needs two windows above the threshold, so the window completing the
        partial one could not make one: waiting for it changes no decision, only delays it."""
        if self.speaking or self._above or self.start_windows < 2:
            return self.position_ms
        return (self._windows * WINDOW + self._pending.size) * 1000 // STT_RATE

    def push(self, samples: Samples) -> list[VadEvent]:
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        usable = audio.size - audio.size % WINDOW
        self._pending = audio[usable:]
        events: list[VadEvent] = []
        for i in range(0, usable, WINDOW):
            window = audio[i : i + WINDOW]
            prob = self._infer(window)
            event = self._step(prob)
            if event is not None:
                events.append(event)
        return events

    def _infer(self, window: Samples) -> float:
        x = np.concatenate([self._context, window])[None, :]
        prob, self._h, self._c = self.model.session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = window[-CONTEXT:]
        p = float(np.asarray(prob).reshape(-1)[0])
        if self.keep_history:
            self.history.append(p)
        return p

    def _step(self, prob: float) -> VadEvent | None:
        index = self._windows
        self._windows += 1
        if not self.speaking:
            if prob >= self.threshold:
                if self._above == 0:
                    self._first_above = index
                self._above += 1
                if self._above >= self.start_windows:
                    self.speaking, self._above, self._below = True, 0, 0
                    return VadEvent("start", self._first_above * WINDOW_MS)
            else:
                self._above = 0
            return None
        if prob < self.neg_threshold:
            if self._below == 0:
                self._first_below = index
            self._below += 1
            if self._below >= self.min_silence_windows:
                self.speaking, self._below = False, 0
                return VadEvent("end", self._first_below * WINDOW_MS)
        elif prob >= self.threshold:
            self._below = 0
        return None
