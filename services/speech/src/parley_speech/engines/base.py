"""The engine interfaces, shaped like LiveKit Agents' and Pipecat's:

- STT: `recognize(utterance)` for a whole utterance, and `stream()` fed audio as it comes, giving
  interim results and a final one at `end()`.
- TTS: `synthesize(text)` yielding audio chunks as they are made, and `stream()` fed text.
- VAD: a stream of speech start / end events (engines/silero.py).

Policy (endpointing, echo, barge-in) is not in here: it is its own layer (policy.py).
Audio inside the worker is float32 mono; STT takes it at `STT_RATE`, TTS gives it at the
engine's own `sample_rate`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np

from parley_common.sentences import Sentence, SentenceSplitter
from parley_common.tasks import cancel_and_wait
from parley_speech.audio.formats import Samples

STT_RATE = 16000

InterimCallback = Callable[[str], None]


class STTStream(ABC):
    """One utterance, streamed: push audio, then `end()` for the final text."""

    @abstractmethod
    async def push(self, samples: Samples) -> None: ...

    @abstractmethod
    async def end(self) -> str:
        """No more audio: the utterance's final transcript."""

    @abstractmethod
    async def aclose(self) -> None:
        """Abandon the utterance (no result)."""


class STTEngine(ABC):
    name: str

    @abstractmethod
    async def recognize(self, samples: Samples, *, language: str | None = None) -> str: ...

    def stream(self, *, language: str | None = None, on_interim: InterimCallback | None = None) -> STTStream:
        return BufferedSTTStream(self, language=language, on_interim=on_interim)

    async def aclose(self) -> None:
        return None


class BufferedSTTStream(STTStream):
    """For engines that recognise whole utterances: buffer, recognise at `end()`. Interim results
    (when asked for) re-recognise the audio so far, at most every `interim_every_s`."""

    def __init__(
        self,
        engine: STTEngine,
        *,
        language: str | None,
        on_interim: InterimCallback | None,
        interim_every_s: float = 1.0,
    ) -> None:
        self.engine, self.language, self.on_interim = engine, language, on_interim
        self.interim_every = int(interim_every_s * STT_RATE)
        self._chunks: list[Samples] = []
        self._size = 0
        self._last_interim = 0
        self._interim: asyncio.Task[None] | None = None

    async def push(self, samples: Samples) -> None:
        self._chunks.append(samples)
        self._size += samples.size
        if (
            self.on_interim is not None
            and self._size - self._last_interim >= self.interim_every
            and (self._interim is None or self._interim.done())
        ):
            self._last_interim = self._size
            self._interim = asyncio.create_task(self._run_interim(self._audio()))

    def _audio(self) -> Samples:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    async def _run_interim(self, audio: Samples) -> None:
        text = await self.engine.recognize(audio, language=self.language)
        if text and self.on_interim is not None:
            self.on_interim(text)

    async def end(self) -> str:
        await self._cancel_interim()
        self.on_interim = None
        return await self.engine.recognize(self._audio(), language=self.language)

    async def aclose(self) -> None:
        await self._cancel_interim()

    async def _cancel_interim(self) -> None:
        if self._interim is not None and not self._interim.done():
            await cancel_and_wait(self._interim)  # an abandoned interim: what it raised is dropped


@dataclass(frozen=True)
class TtsChunk:
    """Synthesized audio at the engine's rate, and (when the engine aligns) the char offset in
    the text up to which speech has started by the end of this chunk."""

    samples: Samples
    text_end: int | None = None


class VoiceChoice(TypedDict, total=False):
    """What a synthesis may choose (None or absent: the engine's own): `TTSEngine.stream`'s keywords."""

    voice: str | None
    language: str | None
    model: str | None


class TTSEngine(ABC):
    name: str
    sample_rate: int

    @abstractmethod
    def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None, model: str | None = None
    ) -> AsyncIterator[TtsChunk]:
        """Audio of `text` as it is made. Closing the iterator early stops the synthesis."""

    async def stream(
        self, texts: AsyncIterator[str], **choice: Unpack[VoiceChoice]
    ) -> AsyncIterator[TtsChunk]:
        """Streaming form: text deltas in, audio out, sentence by sentence (engines with a native
        text stream override this). `text_end` offsets are into the concatenated deltas."""
        splitter = SentenceSplitter()

        async def speak(sentences: list[Sentence]) -> AsyncIterator[TtsChunk]:
            for sentence in sentences:
                audio = self.synthesize(sentence.text, **choice)
                async for chunk in audio:
                    end = None if chunk.text_end is None else sentence.start + chunk.text_end
                    yield TtsChunk(chunk.samples, end)

        async for delta in texts:
            async for chunk in speak(splitter.push(delta)):
                yield chunk
        async for chunk in speak(splitter.finish()):
            yield chunk

    async def aclose(self) -> None:
        return None
