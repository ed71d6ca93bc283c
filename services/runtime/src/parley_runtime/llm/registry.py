"""Which provider answers an agent: engine and model from its config, key from its secrets or
from settings, the built-in engine when nothing usable is configured.

Precedence (docs/llm-providers.md, "Choosing the engine"):
- engine: the `engine/` prefix of the model string (Octavus `anthropic/claude-…`), else the
  agent's `llm_engine` (Kivox), else `PARLEY_LLM_DEFAULT_ENGINE`;
- model: the model string (without the prefix), else `PARLEY_LLM_<ENGINE>_MODEL`;
- key: the agent secret `<ENGINE>_API_KEY`, else `PARLEY_LLM_<ENGINE>_API_KEY`. Base URLs come
  from settings only: a tenant must not be able to point the runtime at internal addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import structlog

from parley_common.catalog_contract import AgentConfig
from parley_common.errors import Codes
from parley_runtime.llm.anthropic import AnthropicProvider
from parley_runtime.llm.builtin import BuiltinProvider
from parley_runtime.llm.engines import BUILTIN, ENGINES
from parley_runtime.llm.errors import LLMError
from parley_runtime.llm.openai_compat import OpenAICompatProvider
from parley_runtime.llm.settings import LLMSettings
from parley_runtime.llm.transport import new_client
from parley_runtime.llm.types import LLMProvider

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LLMSelection:
    provider: LLMProvider
    # The engine that will answer (`builtin` included) and the model to put in the request.
    engine: str
    model: str
    # True when the built-in engine stands in for `requested_engine`, which is not configured.
    fallback: bool = False
    requested_engine: str | None = None


def split_model(model: str | None) -> tuple[str | None, str]:
    """`anthropic/claude-x` → ("anthropic", "claude-x"). A prefix that names no engine stays part
    of the model (`meta-llama/Llama-3.1-8B` on vLLM)."""
    if not model:
        return None, ""
    prefix, sep, rest = model.partition("/")
    if sep and (prefix.lower() in ENGINES or prefix.lower() == BUILTIN):
        return prefix.lower(), rest
    return None, model


class LLMRegistry:
    """Builds providers on demand; all of them share one HTTP connection pool. Close it with
    `aclose()` when the worker stops."""

    def __init__(
        self, settings: LLMSettings | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings or LLMSettings()
        self.options = self.settings.http_options()
        self._own_client = client is None
        self._client = client or new_client(self.options)
        self.builtin = BuiltinProvider(pace_ms=self.settings.runtime_builtin_pace_ms)
        self._fallback_logged: set[str] = set()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def for_agent(self, config: AgentConfig, secrets: Mapping[str, str] | None = None) -> LLMSelection:
        """Kivox agents: `llm_engine` + `llm_model` of the agent config."""
        engine = config.llm_engine.value if config.llm_engine else None
        return self.select(engine=engine, model=config.llm_model, secrets=secrets)

    def select(
        self,
        *,
        engine: str | None = None,
        model: str | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> LLMSelection:
        prefix, model_id = split_model(model)
        name = (prefix or engine or self.settings.llm_default_engine).lower()
        if name == BUILTIN:
            return LLMSelection(self.builtin, BUILTIN, model_id or BUILTIN)
        spec = ENGINES.get(name)
        if spec is None:
            raise LLMError(Codes.LLM_BAD_REQUEST, name, f"unknown LLM engine {name!r}")
        conf = self.settings.engine(name)
        key = ((secrets or {}).get(spec.secret_name) or "").strip() or conf.api_key
        model_id = model_id or conf.model or ""
        if not conf.base_url or (spec.needs_key and not key):
            self._log_fallback(name, "a base URL" if not conf.base_url else "an API key")
            return LLMSelection(
                self.builtin, BUILTIN, model_id or BUILTIN, fallback=True, requested_engine=name
            )
        provider: LLMProvider
        if spec.wire == "anthropic":
            provider = AnthropicProvider(
                api_key=key or "",
                base_url=conf.base_url,
                default_model=conf.model,
                default_max_tokens=self.settings.llm_max_tokens,
                options=self.options,
                client=self._client,
            )
        else:
            provider = OpenAICompatProvider(
                name=name,
                base_url=conf.base_url,
                api_key=key,
                default_model=conf.model,
                dialect=spec.dialect,
                options=self.options,
                client=self._client,
            )
        return LLMSelection(provider, name, model_id, requested_engine=name)

    def _log_fallback(self, engine: str, missing: str) -> None:
        if engine in self._fallback_logged:
            return
        self._fallback_logged.add(engine)
        log.warning(
            "llm.builtin_fallback",
            engine=engine,
            missing=missing,
            hint=f"set PARLEY_LLM_{engine.upper()}_API_KEY / _BASE_URL, or the agent secret "
            f"{ENGINES[engine].secret_name}; the built-in engine answers meanwhile",
        )
