# One piece (452 lines): the whole bus contract of the speech workers (payloads, headers, the
# stream and subject rules) in one place, as both sides read it; split, one protocol would be spread out.
"""Bus contract of the speech workers: voice config, recognition sessions, synthesis jobs.

Recognition (stateful, one worker per voice session):
1. The edge requests `speech.session.open` (`SpeechSessionOpen`, queue group `speech`); the worker
   that takes it answers `SpeechSessionOpened` with its own audio subject.
2. The edge publishes audio to that subject on core NATS (never JetStream): the raw bytes as the
   payload, the chunk's sequence number in the `Parley-Seq` header. Control messages
   (`SpeechControl`, JSON) go to the same subject with a `Parley-Control: 1` header; NATS keeps the
   order of one publisher on one subject, so a control message lands between the right chunks.
3. The worker publishes `SpeechEvent`s on `events_subject` (`session.<conversation_id>.speech` by
   default): speech_started, speech_stopped, barge_in, transcript (interim/final), no_speech,
   audio_gap, error, closed, and a heartbeat every `PARLEY_SPEECH_HEARTBEAT_S`. An edge that hears
   nothing for three heartbeats re-opens the session (any worker) with `generation + 1` and replays
   the audio not yet covered by a final transcript (`parley_common.speech_client`).

Synthesis (one job per sentence, any worker):
- `speech.tts.synthesize` (`TtsSynthesizeRequest`) is answered at once with `TtsAccepted`; the
  worker then publishes audio chunks on the requester's `audio_subject` (payload: the audio bytes;
  headers `Parley-Stream`, `Parley-Segment`, `Parley-Seq`, `Parley-Text-Start`, `Parley-Text-End`,
  `Parley-Offset-Ms`, `Parley-Format`, `Parley-Last`), paced to real time, and `TtsReport`s on
  `report_subject`: `synthesized` (all audio made), then `done` or `cancelled` or `error`, with a
  heartbeat while the job waits or plays.
- A publish on `speech.tts.cancel.<stream_id>` (`TtsCancel`) stops every job of the stream at
  once; each answers with a `cancelled` report saying exactly what it published.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley_common.errors import BusReply, ErrorEnvelope

# --------------------------------------------------------------------------------------- engines


class EngineKind(StrEnum):
    STT = "stt"
    TTS = "tts"


@dataclass(frozen=True)
class EngineInfo:
    name: str
    kinds: frozenset[EngineKind]
    # Cloud engines need a key: the agent secret `secret` (unless the config names another), else
    # the setting `PARLEY_SPEECH_<NAME>_API_KEY`.
    needs_key: bool
    description: str

    @property
    def secret(self) -> str:
        return f"{self.name.upper()}_API_KEY"

    @property
    def setting(self) -> str:
        return f"PARLEY_SPEECH_{self.name.upper()}_API_KEY"


_STT, _TTS = EngineKind.STT, EngineKind.TTS
# Every engine the speech workers have. `whisper` and `espeak` run offline and are the defaults.
ENGINES: dict[str, EngineInfo] = {
    e.name: e
    for e in (
        EngineInfo("whisper", frozenset({_STT}), False, "faster-whisper, tiny.en int8 on CPU (offline)"),
        EngineInfo("espeak", frozenset({_TTS}), False, "espeak-ng (offline, out of process)"),
        EngineInfo("openai", frozenset({_STT, _TTS}), True, "OpenAI /v1/audio/transcriptions, /speech"),
        EngineInfo("groq", frozenset({_STT, _TTS}), True, "Groq, OpenAI-compatible audio endpoints"),
        EngineInfo("deepgram", frozenset({_STT}), True, "Deepgram live streaming STT (WebSocket)"),
        EngineInfo("elevenlabs", frozenset({_TTS}), True, "ElevenLabs stream-input TTS (WebSocket)"),
    )
}
DEFAULT_STT_ENGINE = "whisper"
DEFAULT_TTS_ENGINE = "espeak"


class SpeechProviderKeys(BaseSettings):
    """Platform-wide keys of the cloud speech engines (`PARLEY_SPEECH_<ENGINE>_API_KEY`).

    The speech workers use them; the catalog only asks whether one is set (lint), so both read the
    same environment and an operator sets each key once.
    """

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    speech_openai_api_key: SecretStr | None = None
    speech_groq_api_key: SecretStr | None = None
    speech_deepgram_api_key: SecretStr | None = None
    speech_elevenlabs_api_key: SecretStr | None = None

    def key_for(self, engine: str) -> str | None:
        value = getattr(self, f"speech_{engine}_api_key", None)
        return value.get_secret_value() if isinstance(value, SecretStr) and value.get_secret_value() else None


# ------------------------------------------------------------------------ agent `config.voice`

EngineName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")]
SecretName = Annotated[str, Field(min_length=1, max_length=200)]


class VoiceEngineConfig(BaseModel):
    """One engine of an agent's voice: which, with what model, voice and language.

    `engine` is any name here: lint (and the speech worker) report one it does not know, so an
    agent saved with a misspelt engine is told so instead of being refused on save.
    """

    model_config = ConfigDict(extra="forbid")

    engine: EngineName
    model: Annotated[str, Field(max_length=200)] | None = None
    # TTS voice (espeak-ng voice name such as `en-us`, an OpenAI voice, an ElevenLabs voice id).
    voice: Annotated[str, Field(max_length=200)] | None = None
    # BCP-47-ish language (`en`, `en-US`); engines that take none ignore it.
    language: Annotated[str, Field(max_length=35)] | None = None
    # Agent secret holding the API key, instead of the default `<ENGINE>_API_KEY`.
    api_key_secret: SecretName | None = None


class VoicePolicyConfig(BaseModel):
    """Turn-taking policy of a voice session; any field left out takes the worker's setting."""

    model_config = ConfigDict(extra="forbid")

    # Silence after speech that ends the user's turn (endpointing).
    end_of_turn_silence_ms: Annotated[int, Field(ge=100, le=5000)] | None = None
    # Speech shorter than this (in total) is noise: no turn, no transcript.
    min_speech_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    # While the agent speaks: speech starting within this window of the agent's first audio is
    # taken for echo of the agent's own voice and ignored.
    echo_warmup_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    # While the agent speaks: speech must last this long to interrupt it (barge-in).
    barge_in_min_speech_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    # Silero speech probability above which a window counts as speech.
    vad_threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    # False: user speech never interrupts the agent (no barge_in events).
    allow_interruptions: bool | None = None
    # Interim transcripts while the user speaks (streaming engines always; whisper re-decodes).
    interim_results: bool | None = None


class AgentVoiceConfig(BaseModel):
    """`config.voice` of an agent: engines and policy of its voice sessions."""

    model_config = ConfigDict(extra="forbid")

    stt: VoiceEngineConfig | None = None
    tts: VoiceEngineConfig | None = None
    policy: VoicePolicyConfig | None = None


# --------------------------------------------------------------------------------- audio formats


class AudioEncoding(StrEnum):
    PCM16 = "pcm16"  # signed 16-bit little-endian mono
    MULAW = "mulaw"  # G.711 μ-law, 8 kHz mono (telephony)
    # Whole-utterance containers (what browsers' MediaRecorder and recorders make): the rate comes
    # from the container, and an utterance is bracketed by utterance_start / utterance_end.
    WAV = "wav"
    WEBM_OPUS = "webm_opus"
    OGG_OPUS = "ogg_opus"


CONTAINER_ENCODINGS = frozenset({AudioEncoding.WAV, AudioEncoding.WEBM_OPUS, AudioEncoding.OGG_OPUS})
PCM16_INPUT_RATES = (8000, 16000, 24000, 44100, 48000)


class InputFormat(BaseModel):
    """The audio an edge sends. Streaming: pcm16 (16 kHz by default) or μ-law 8 kHz."""

    model_config = ConfigDict(extra="forbid")

    encoding: AudioEncoding = AudioEncoding.PCM16
    # pcm16: one of PCM16_INPUT_RATES; mulaw: 8000; containers: none (read from the container).
    sample_rate: int | None = 16000

    @model_validator(mode="after")
    def _rate_fits_encoding(self) -> InputFormat:
        if self.encoding is AudioEncoding.PCM16 and self.sample_rate not in PCM16_INPUT_RATES:
            raise ValueError(f"pcm16 sample_rate must be one of {PCM16_INPUT_RATES}")
        if self.encoding is AudioEncoding.MULAW and self.sample_rate != 8000:
            raise ValueError("mulaw sample_rate must be 8000")
        if self.encoding in CONTAINER_ENCODINGS:
            self.sample_rate = None
        return self

    @property
    def is_container(self) -> bool:
        return self.encoding in CONTAINER_ENCODINGS

    @property
    def label(self) -> str:
        return (
            self.encoding.value if self.sample_rate is None else f"{self.encoding.value}_{self.sample_rate}"
        )


class OutputFormat(StrEnum):
    """Synthesized audio: PCM16 24 kHz by default, PCM16 16 kHz, or μ-law 8 kHz (telephony)."""

    PCM16_24000 = "pcm16_24000"
    PCM16_16000 = "pcm16_16000"
    MULAW_8000 = "mulaw_8000"

    @property
    def sample_rate(self) -> int:
        return int(self.value.rsplit("_", 1)[1])

    @property
    def encoding(self) -> AudioEncoding:
        return AudioEncoding(self.value.rsplit("_", 1)[0])

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is AudioEncoding.PCM16 else 1


# --------------------------------------------------------------------------------- recognition

Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
Subject = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")]

# NATS headers of audio and control messages on a session's audio subject, and of TTS chunks.
HDR_SEQ = "Parley-Seq"
HDR_CONTROL = "Parley-Control"
HDR_STREAM = "Parley-Stream"
HDR_SEGMENT = "Parley-Segment"
HDR_TEXT_START = "Parley-Text-Start"
HDR_TEXT_END = "Parley-Text-End"
HDR_OFFSET_MS = "Parley-Offset-Ms"
HDR_FORMAT = "Parley-Format"
HDR_LAST = "Parley-Last"


class SpeechSessionOpen(BaseModel):
    """Edge → `speech.session.open`: start (or re-open) recognition of one voice session."""

    # Stable for the voice session's life, across re-opens.
    voice_session_id: Id
    conversation_id: Id
    # Whose voice config and secrets apply (cloud engine keys are read from the agent's secrets).
    agent_id: Annotated[str, Field(max_length=200)] | None = None
    # 0 on the first open, +1 on every re-open; events carry it, so an edge drops a stale worker's.
    generation: Annotated[int, Field(ge=0)] = 0
    input: InputFormat = Field(default_factory=InputFormat)
    # Engine and policy: the agent's `config.voice` as the edge knows it (or none: defaults).
    stt: VoiceEngineConfig | None = None
    policy: VoicePolicyConfig | None = None
    # Re-open: is the agent speaking right now, and which utterance number comes next.
    agent_speaking: bool = False
    next_utterance: Annotated[int, Field(ge=1)] = 1
    # Where events go; default `session.<conversation_id>.speech`.
    events_subject: Subject | None = None


class SpeechSessionOpened(BusReply):
    worker_id: str | None = None
    audio_subject: str | None = None
    # The worker's heartbeat period: an edge hearing nothing for three of them re-opens elsewhere.
    heartbeat_s: float | None = None


ControlType = Literal["utterance_start", "utterance_end", "agent_speaking", "flush", "close"]


class SpeechControl(BaseModel):
    """Edge → worker, on the audio subject with header `Parley-Control: 1`."""

    type: ControlType
    # agent_speaking: true when the agent's audio starts playing, false when it stops.
    speaking: bool | None = None


class _Event(BaseModel):
    voice_session_id: str
    generation: int
    worker_id: str
    # Per (session, generation) counter, from 1: a gap means an event was lost.
    n: int
    # Each event narrows it to its own literal (the key keeps this place).
    type: str


class _UtteranceEvent(_Event):
    """An event of one utterance of the user (numbered per session, from 1)."""

    utterance: int


class _SpeechAt(_UtteranceEvent):
    # Position in the session's audio (ms since the open) where it happened.
    at_ms: int


class _SpeechEdge(_SpeechAt):
    # The audio chunk where speech began or ended.
    seq: int | None = None


class SpeechStarted(_SpeechEdge):
    type: Literal["speech_started"] = "speech_started"


class SpeechStopped(_SpeechEdge):
    """End of the user's turn: speech ended at `at_ms`, and silence held for the policy's window."""

    type: Literal["speech_stopped"] = "speech_stopped"


class BargeIn(_SpeechAt):
    """User speech, long enough, while the agent speaks: stop the agent's audio."""

    type: Literal["barge_in"] = "barge_in"


class Transcript(_UtteranceEvent):
    type: Literal["transcript"] = "transcript"
    final: bool
    text: str
    language: str | None = None
    # The edge's audio chunks the transcript covers (inclusive); None for container uploads.
    seq_start: int | None = None
    seq_end: int | None = None
    # Recognition time (end of turn → transcript), for latency figures.
    stt_ms: int | None = None


class NoSpeech(_UtteranceEvent):
    """An utterance (an upload, or a flush) held no speech: there is no turn."""

    type: Literal["no_speech"] = "no_speech"


class AudioGap(_Event):
    """Chunks `from_seq`..`to_seq` never arrived (core NATS dropped them, or the edge skipped)."""

    type: Literal["audio_gap"] = "audio_gap"
    from_seq: int
    to_seq: int


class SpeechError(_Event):
    type: Literal["error"] = "error"
    error: ErrorEnvelope
    # True when the worker closed the session (re-open it); false: the session goes on.
    fatal: bool = False
    utterance: int | None = None


class SpeechHeartbeat(_Event):
    type: Literal["heartbeat"] = "heartbeat"
    last_seq: int | None = None
    # Audio received but not yet processed (ms): the worker's backlog for this session.
    backlog_ms: int = 0
    duplicates: int = 0
    gaps: int = 0


class SpeechClosed(_Event):
    type: Literal["closed"] = "closed"
    reason: str


SpeechEvent = Annotated[
    SpeechStarted
    | SpeechStopped
    | BargeIn
    | Transcript
    | NoSpeech
    | AudioGap
    | SpeechError
    | SpeechHeartbeat
    | SpeechClosed,
    Field(discriminator="type"),
]


SPEECH_EVENT: TypeAdapter[SpeechEvent] = TypeAdapter(SpeechEvent)


def parse_speech_event(data: bytes | str) -> SpeechEvent:
    """Any recognition event from its JSON; raises `pydantic.ValidationError` on anything else."""
    return SPEECH_EVENT.validate_json(data)


# ----------------------------------------------------------------------------------- synthesis


class TtsSynthesizeRequest(BaseModel):
    """Requester (the runtime) → `speech.tts.synthesize`: speak one sentence of a stream."""

    stream_id: Id
    # The sentence's id within the stream (e.g. its index); reports and chunk headers carry it.
    segment_id: Annotated[str, Field(min_length=1, max_length=64)] = "0"
    text: Annotated[str, Field(min_length=1)]
    # Offset of `text` in the whole answer: chunk text ranges are absolute, so the requester can
    # keep exactly `answer[:text_end]` after a cancel.
    text_offset: Annotated[int, Field(ge=0)] = 0
    conversation_id: Id | None = None
    agent_id: Annotated[str, Field(max_length=200)] | None = None
    tts: VoiceEngineConfig | None = None
    output: OutputFormat = OutputFormat.PCM16_24000
    audio_subject: Subject
    report_subject: Subject
    start_seq: Annotated[int, Field(ge=0)] = 0
    # Pacing: the wall-clock time (unix seconds) the first sample is due at the listener; a chunk
    # is published `lead_ms` before it is due. None: now (the first sentence). A later sentence
    # passes the previous one's `playout_at + total_audio_ms`, so sentences play back to back.
    playout_at: float | None = None
    lead_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    # False: publish as fast as synthesized (files, tests of throughput).
    realtime: bool = True


class TtsAccepted(BusReply):
    worker_id: str | None = None


class TtsReport(BaseModel):
    """Worker → `report_subject`. Counts cover what was *published* on `audio_subject`."""

    type: Literal["synthesized", "done", "cancelled", "error", "heartbeat"]
    stream_id: str
    segment_id: str
    worker_id: str
    chunks: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    # The seq the next sentence of the stream starts at.
    next_seq: int
    audio_ms: int = 0
    # Absolute char offset (in the whole answer) of the text spoken so far: keep `answer[:text_end]`.
    text_end: int
    # synthesized/done: the sentence's whole audio duration, and its playout time as used.
    total_audio_ms: int | None = None
    # synthesized/done: how many chunks the sentence has in all (the next sentence starts at
    # `start_seq + total_chunks`).
    total_chunks: int | None = None
    playout_at: float | None = None
    # Time from the request's arrival to the first chunk's publication.
    first_chunk_ms: int | None = None
    error: ErrorEnvelope | None = None


class TtsCancel(BaseModel):
    """Anyone → `speech.tts.cancel.<stream_id>`: stop the stream's jobs now."""

    stream_id: Id
    reason: Annotated[str, Field(max_length=200)] = "cancel"
