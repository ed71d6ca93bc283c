"""Which engine serves a voice session or a sentence: the agent's `config.voice` (as the request
carries it), keys from the agent's secrets or the settings, the offline engines by default.

Offline engines are loaded once per worker at start (models are paths inside installed wheels);
cloud engines are cheap objects built per use around one shared HTTP client. Base URLs come from
settings only.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import httpx

from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import (
    DEFAULT_STT_ENGINE,
    DEFAULT_TTS_ENGINE,
    ENGINES,
    EngineKind,
    VoiceEngineConfig,
)
from parley_speech.agents import AgentSecrets
from parley_speech.engines.base import STTEngine, TTSEngine
from parley_speech.engines.deepgram import DeepgramSTT
from parley_speech.engines.elevenlabs import ElevenLabsTTS
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.openai_audio import OpenAISTT, OpenAITTS
from parley_speech.engines.silero import SileroModel
from parley_speech.engines.whisper import WhisperSTT
from parley_speech.settings import SpeechSettings


@dataclass(frozen=True)
class TtsChoice:
    engine: TTSEngine
    voice: str | None
    model: str | None
    language: str | None


class EngineRegistry:
    def __init__(
        self, settings: SpeechSettings, *, stt_executor: Executor, agents: AgentSecrets | None
    ) -> None:
        self.settings = settings
        self.stt_executor = stt_executor
        self.agents = agents
        self.whisper: WhisperSTT | None = None
        self.silero: SileroModel | None = None
        self.espeak: EspeakTTS | None = None
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.speech_read_timeout_s, connect=settings.speech_connect_timeout_s)
        )

    async def start(self) -> None:
        s = self.settings
        self.silero = SileroModel(s.speech_silero_model_path or None)
        self.whisper = WhisperSTT(
            self.stt_executor,
            model_path=s.speech_whisper_model_path or None,
            compute_type=s.speech_whisper_compute_type,
            cpu_threads=s.speech_stt_cpu_threads,
            num_workers=s.speech_stt_concurrency,
            beam_size=s.speech_whisper_beam_size,
        )
        self.espeak = EspeakTTS(
            processes=s.speech_tts_processes, voice=s.speech_espeak_voice, rate_wpm=s.speech_espeak_rate_wpm
        )
        await self.espeak.start()

    async def aclose(self) -> None:
        if self.espeak is not None:
            await self.espeak.aclose()
        await self.http.aclose()

    # ------------------------------------------------------------------------------------------

    def _check(self, spec: VoiceEngineConfig | None, kind: EngineKind, default: str) -> str:
        name = spec.engine if spec is not None else default
        info = ENGINES.get(name)
        if info is None or kind not in info.kinds:
            raise ParleyError(
                Codes.SPEECH_UNKNOWN_ENGINE, params={"kind": kind.value.upper(), "engine": name}
            )
        return name

    async def _key(self, name: str, spec: VoiceEngineConfig | None, agent_id: str | None) -> str:
        """The agent's secret first (the default name or the one its config gives), then the setting."""
        info = ENGINES[name]
        secret = (spec.api_key_secret if spec is not None else None) or info.secret
        if agent_id and self.agents is not None:
            value = await self.agents.secret(agent_id, secret)
            if value:
                return value
        value = self.settings.key_for(name)
        if value:
            return value
        raise ParleyError(
            Codes.SPEECH_KEY_MISSING, params={"engine": name, "secret": secret, "setting": info.setting}
        )

    async def stt(self, spec: VoiceEngineConfig | None, agent_id: str | None) -> STTEngine:
        name = self._check(spec, EngineKind.STT, DEFAULT_STT_ENGINE)
        s = self.settings
        model = spec.model if spec is not None else None
        if name == "whisper":
            assert self.whisper is not None, "start() loads the offline engines"
            return self.whisper
        key = await self._key(name, spec, agent_id)
        if name == "deepgram":
            return DeepgramSTT(
                url=s.speech_deepgram_url,
                api_key=key,
                model=model or s.speech_deepgram_model,
                endpointing_ms=s.speech_deepgram_endpointing_ms,
                connect_timeout_s=s.speech_connect_timeout_s,
                read_timeout_s=s.speech_read_timeout_s,
            )
        base_url, default_model = (
            (s.speech_groq_base_url, s.speech_groq_stt_model)
            if name == "groq"
            else (s.speech_openai_base_url, s.speech_openai_stt_model)
        )
        return OpenAISTT(name, client=self.http, base_url=base_url, api_key=key, model=model or default_model)

    async def tts(self, spec: VoiceEngineConfig | None, agent_id: str | None) -> TtsChoice:
        name = self._check(spec, EngineKind.TTS, DEFAULT_TTS_ENGINE)
        s = self.settings
        voice = spec.voice if spec is not None else None
        model = spec.model if spec is not None else None
        language = spec.language if spec is not None else None
        if name == "espeak":
            assert self.espeak is not None, "start() loads the offline engines"
            return TtsChoice(self.espeak, voice, None, language)
        key = await self._key(name, spec, agent_id)
        engine: TTSEngine
        if name == "elevenlabs":
            engine = ElevenLabsTTS(
                url=s.speech_elevenlabs_url,
                api_key=key,
                model=s.speech_elevenlabs_model,
                voice=s.speech_elevenlabs_voice,
                connect_timeout_s=s.speech_connect_timeout_s,
                read_timeout_s=s.speech_read_timeout_s,
            )
        elif name == "groq":
            engine = OpenAITTS(
                name,
                client=self.http,
                base_url=s.speech_groq_base_url,
                api_key=key,
                model=s.speech_groq_tts_model,
                voice=s.speech_groq_tts_voice,
                response_format="wav",
            )
        else:
            engine = OpenAITTS(
                name,
                client=self.http,
                base_url=s.speech_openai_base_url,
                api_key=key,
                model=s.speech_openai_tts_model,
                voice=s.speech_openai_tts_voice,
            )
        return TtsChoice(engine, voice, model, language)
