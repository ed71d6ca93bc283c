"""LLM settings (env `PARLEY_LLM_*`, and `PARLEY_RUNTIME_BUILTIN_PACE_MS`).

A mixin-friendly pydantic-settings class: the runtime's settings may inherit from it, or the
registry reads it on its own. Per engine: `PARLEY_LLM_<ENGINE>_API_KEY`, `_BASE_URL`, `_MODEL`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley_runtime.llm.engines import ENGINES, EngineName
from parley_runtime.llm.transport import HttpOptions

_HTTP = HttpOptions()
# The transport options an operator may set (the others keep HttpOptions' defaults).
_HTTP_OPTIONS = (
    "connect_timeout_s",
    "read_timeout_s",
    "max_attempts",
    "retry_initial_s",
    "retry_max_s",
    "retry_after_cap_s",
)


@dataclass(frozen=True)
class EngineSettings:
    base_url: str | None
    api_key: str | None
    model: str | None


class LLMSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    # Engine of agents whose config names none (and whose model has no `engine/` prefix).
    llm_default_engine: EngineName = "openai"

    llm_openai_api_key: SecretStr | None = None
    llm_openai_base_url: str | None = "https://api.openai.com/v1"
    llm_openai_model: str | None = "gpt-4o-mini"
    llm_deepseek_api_key: SecretStr | None = None
    llm_deepseek_base_url: str | None = "https://api.deepseek.com/v1"
    llm_deepseek_model: str | None = "deepseek-chat"
    llm_mistral_api_key: SecretStr | None = None
    llm_mistral_base_url: str | None = "https://api.mistral.ai/v1"
    llm_mistral_model: str | None = "mistral-small-latest"
    llm_gemini_api_key: SecretStr | None = None
    llm_gemini_base_url: str | None = "https://generativelanguage.googleapis.com/v1beta/openai"
    llm_gemini_model: str | None = "gemini-2.5-flash"
    llm_anthropic_api_key: SecretStr | None = None
    llm_anthropic_base_url: str | None = "https://api.anthropic.com"
    llm_anthropic_model: str | None = "claude-sonnet-4-5"
    # Local servers need no key. vLLM and llama.cpp have no default address (llama.cpp's usual
    # port 8080 is Parley's edge), so they are used only once their base URL is set.
    llm_ollama_api_key: SecretStr | None = None
    llm_ollama_base_url: str | None = "http://127.0.0.1:11434/v1"
    llm_ollama_model: str | None = "llama3.2"
    llm_vllm_api_key: SecretStr | None = None
    llm_vllm_base_url: str | None = None
    llm_vllm_model: str | None = None
    llm_llamacpp_api_key: SecretStr | None = None
    llm_llamacpp_base_url: str | None = None
    llm_llamacpp_model: str | None = "default"  # llama.cpp serves one model and ignores the name

    # `PARLEY_LLM_<option>` for each of `_HTTP_OPTIONS`; the defaults are HttpOptions' own.
    llm_connect_timeout_s: float = _HTTP.connect_timeout_s
    llm_read_timeout_s: float = _HTTP.read_timeout_s
    llm_max_attempts: int = _HTTP.max_attempts
    llm_retry_initial_s: float = _HTTP.retry_initial_s
    llm_retry_max_s: float = _HTTP.retry_max_s
    llm_retry_after_cap_s: float = _HTTP.retry_after_cap_s
    # Anthropic requires max_tokens; used when a request sets none.
    llm_max_tokens: int = 4096
    # Pause before each token of the built-in engine; 0 = as fast as possible.
    runtime_builtin_pace_ms: float = 20.0

    def engine(self, name: str) -> EngineSettings:
        if name not in ENGINES:
            raise KeyError(name)
        key: SecretStr | None = getattr(self, f"llm_{name}_api_key")
        return EngineSettings(
            base_url=getattr(self, f"llm_{name}_base_url") or None,
            api_key=(key.get_secret_value().strip() or None) if key else None,
            model=getattr(self, f"llm_{name}_model") or None,
        )

    def http_options(self) -> HttpOptions:
        return replace(_HTTP, **{name: getattr(self, f"llm_{name}") for name in _HTTP_OPTIONS})
