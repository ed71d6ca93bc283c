"""The agent's voice in a voice session: its text spoken while the LLM is still writing.

Each message of a turn (a `text_full`, an LLM answer) is one `SpokenMessage`: its text goes through
a `SentenceSplitter`, each sentence is sent to the speech workers (`TtsStream`,
`speech.tts.synthesize`) as soon as it is complete, and the workers publish the audio, paced about
real time, on `session.<id>.audio.out` (core NATS: never JetStream), which the gateway holding the
socket relays as `audio_delta`. Messages of one turn are spoken one after the other; the turn ends
(its `turn_complete`) only once the last audio is out.

A cancel (the client's, or the gateway's on barge-in) stops the synthesis at once: the workers'
`cancelled` reports say exactly how much text was spoken (`text_end`, at a word's end), and the
message kept in the transcript and the LLM history is that much of the answer.

Speech failures (no worker, a worker lost mid-sentence, an engine error) are an `error` event once
per turn; the text is answered as usual, only silent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client

from parley_common import subjects
from parley_common.errors import ErrorEnvelope, ParleyError, envelope
from parley_common.sentences import Sentence, SentenceSplitter
from parley_common.speech_client import TtsStream, TtsSummary
from parley_common.speech_contract import OutputFormat, VoiceEngineConfig
from parley_common.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

OnError = Callable[[ErrorEnvelope], Awaitable[None]]


@dataclass
class TurnVoice:
    """The voice of one turn: where and how to speak, and the turn's cancel switch."""

    nc: Client
    conversation_id: str
    output: OutputFormat
    tts: VoiceEngineConfig | None
    agent_id: str | None
    on_error: OnError
    max_sentence_chars: int = 250
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    messages: int = 0
    error_reported: bool = False
    spoken: list[TtsSummary] = field(default_factory=list)

    def message(self) -> SpokenMessage:
        self.messages += 1
        # Unique per attempt: a turn replayed after a crash is a new stream, played again in full.
        stream_id = f"{self.conversation_id}-{self.messages}-{uuid.uuid4().hex[:8]}"
        return SpokenMessage(self, stream_id)

    def cancel(self) -> None:
        self.cancelled.set()

    async def say(self, text: str) -> int | None:
        """Speak a whole text; returns how much of it was spoken if cancelled, else None."""
        if self.cancelled.is_set():
            return 0
        spoken = self.message()
        spoken.push(text)
        spoken.finish()
        return await spoken.result()

    async def error(self, error: ErrorEnvelope) -> None:
        if not self.error_reported:
            self.error_reported = True
            await self.on_error(error)


class SpokenMessage:
    def __init__(self, voice: TurnVoice, stream_id: str) -> None:
        self.voice = voice
        self.splitter = SentenceSplitter(max_chars=voice.max_sentence_chars)
        self.queue: asyncio.Queue[Sentence | None] = asyncio.Queue()
        self.tts = TtsStream(
            voice.nc,
            stream_id=stream_id,
            audio_subject=subjects.session_audio_out(voice.conversation_id),
            output=voice.output,
            tts=voice.tts,
            agent_id=voice.agent_id,
            conversation_id=voice.conversation_id,
        )
        self.failed = False
        self.task = asyncio.create_task(self._run(), name="voice-message")

    def push(self, delta: str) -> None:
        for sentence in self.splitter.push(delta):
            self.queue.put_nowait(sentence)

    def finish(self) -> None:
        for sentence in self.splitter.finish():
            self.queue.put_nowait(sentence)
        self.queue.put_nowait(None)

    async def _run(self) -> TtsSummary:
        await self.tts.start()
        while True:
            sentence = await self.queue.get()
            if sentence is None:
                break
            if self.failed or self.voice.cancelled.is_set() or not sentence.text.strip():
                continue
            try:
                await self.tts.say(sentence.text, text_offset=sentence.start)
            except ParleyError as exc:
                self.failed = True
                await self.voice.error(envelope(exc.code, params=exc.params))
        summary = await self.tts.wait()
        if summary.error is not None:
            await self.voice.error(summary.error)
        return summary

    async def result(self) -> int | None:
        """Waits until the message is spoken (None) or the turn is cancelled (the text offset
        spoken so far)."""
        cancelled = asyncio.ensure_future(self.voice.cancelled.wait())
        try:
            done, _ = await asyncio.wait({self.task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if self.task in done and not self.voice.cancelled.is_set():
                self.voice.spoken.append(self.task.result())
                return None
            await cancel_and_wait(self.task)
            summary = await self.tts.cancel("cancel")
            self.voice.spoken.append(summary)
            return summary.text_end
        except asyncio.CancelledError:
            # The turn is abandoned (end, timeout, hand-over): stop the audio, don't wait for it.
            self.task.cancel()
            task = asyncio.ensure_future(self.tts.cancel("abandoned", timeout=0.5))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        finally:
            cancelled.cancel()
            await self.tts.aclose()
