"""Choosing the provider: engine and model precedence, keys from secrets or settings, fallback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import structlog

from parley_common.catalog_contract import AgentConfig, AgentLLMEngine
from parley_common.errors import Codes
from parley_runtime.llm import (
    AnthropicProvider,
    BuiltinProvider,
    ChatMessage,
    ChatRequest,
    LLMError,
    LLMRegistry,
    LLMSettings,
    OpenAICompatProvider,
    split_model,
)
from parley_runtime.llm.engines import ENGINES

from .fakes import FakeAnthropic, FakeOpenAI, anthropic_text, openai_text
from .support import drain, text_of


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("PARLEY_LLM_", "PARLEY_RUNTIME_BUILTIN")):
            monkeypatch.delenv(name)


@pytest.fixture
async def registry() -> AsyncIterator[LLMRegistry]:
    reg = LLMRegistry(LLMSettings(llm_openai_api_key="sk-env", llm_anthropic_api_key="ant-env"))
    yield reg
    await reg.aclose()


def test_split_model() -> None:
    assert split_model("anthropic/claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert split_model("OpenAI/gpt-4o") == ("openai", "gpt-4o")
    assert split_model("meta-llama/Llama-3.1-8B") == (None, "meta-llama/Llama-3.1-8B")
    assert split_model("vllm/meta-llama/Llama-3.1-8B") == ("vllm", "meta-llama/Llama-3.1-8B")
    assert split_model("builtin/echo") == ("builtin", "echo")
    assert split_model(None) == (None, "")


async def test_without_any_key_the_builtin_engine_answers_and_says_so_once() -> None:
    registry = LLMRegistry(LLMSettings())
    with structlog.testing.capture_logs() as logs:
        first = registry.select()
        second = registry.for_agent(
            AgentConfig(name="a", llm_engine=AgentLLMEngine.OPENAI, llm_model="gpt-4o")
        )
        other = registry.select(engine="mistral")
    assert (
        isinstance(first.provider, BuiltinProvider) and first.fallback and first.requested_engine == "openai"
    )
    assert (second.engine, second.model, second.fallback) == ("builtin", "gpt-4o", True)
    assert other.fallback and other.requested_engine == "mistral"
    warnings = [entry for entry in logs if entry["event"] == "llm.builtin_fallback"]
    assert [w["engine"] for w in warnings] == ["openai", "mistral"]  # once per engine
    assert "PARLEY_LLM_OPENAI_API_KEY" in warnings[0]["hint"]
    await registry.aclose()


async def test_engine_from_settings_with_its_defaults(registry: LLMRegistry) -> None:
    selection = registry.select()
    assert isinstance(selection.provider, OpenAICompatProvider)
    assert (selection.engine, selection.model, selection.fallback) == ("openai", "gpt-4o-mini", False)
    assert selection.provider.base_url == "https://api.openai.com/v1"
    assert selection.provider.dialect == ENGINES["openai"].dialect


async def test_a_model_prefix_wins_over_the_configured_engine(registry: LLMRegistry) -> None:
    config = AgentConfig(name="a", llm_engine=AgentLLMEngine.OPENAI, llm_model="anthropic/claude-opus-4")
    selection = registry.for_agent(config)
    assert isinstance(selection.provider, AnthropicProvider)
    assert (selection.engine, selection.model) == ("anthropic", "claude-opus-4")
    assert selection.provider.base_url == "https://api.anthropic.com"


async def test_the_kivox_engine_field_picks_the_engine_and_its_address() -> None:
    settings = LLMSettings(llm_deepseek_api_key="ds", llm_gemini_api_key="gm")
    registry = LLMRegistry(settings)
    deepseek = registry.for_agent(AgentConfig(name="a", llm_engine=AgentLLMEngine.DEEPSEEK))
    gemini = registry.for_agent(
        AgentConfig(name="a", llm_engine=AgentLLMEngine.GEMINI, llm_model="gemini-2.0-flash")
    )
    assert isinstance(deepseek.provider, OpenAICompatProvider) and isinstance(
        gemini.provider, OpenAICompatProvider
    )
    assert (deepseek.provider.base_url, deepseek.model) == ("https://api.deepseek.com/v1", "deepseek-chat")
    assert gemini.provider.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert gemini.model == "gemini-2.0-flash"
    await registry.aclose()


async def test_an_agent_secret_overrides_the_operator_key_on_the_wire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeOpenAI([openai_text("from secret"), openai_text("from env")], api_key="sk-agent") as fake:
        monkeypatch.setenv("PARLEY_LLM_OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("PARLEY_LLM_OPENAI_API_KEY", "sk-operator")
        registry = LLMRegistry(LLMSettings(llm_max_attempts=1))
        with_secret = registry.select(engine="openai", secrets={"OPENAI_API_KEY": "sk-agent"})
        request = ChatRequest(model=with_secret.model, messages=[ChatMessage(role="user", content="hi")])
        assert text_of(await drain(with_secret.provider.stream(request))) == "from secret"
        without = registry.select(engine="openai", secrets={"OPENAI_API_KEY": "  "})  # blank: ignored
        with pytest.raises(LLMError) as caught:
            await drain(without.provider.stream(request))
        await registry.aclose()
    assert caught.value.code is Codes.LLM_AUTH_FAILED  # the fake only knows the agent's key
    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer sk-agent", "Bearer sk-operator"]


async def test_a_secret_alone_enables_an_engine_but_not_its_address() -> None:
    with FakeAnthropic([anthropic_text("hi")], api_key="ant-agent") as fake:
        settings = LLMSettings(llm_anthropic_base_url=fake.base_url)
        registry = LLMRegistry(settings)
        # Secrets cannot redirect the runtime: a *_BASE_URL secret is not read.
        selection = registry.select(
            model="anthropic/claude-fake",
            secrets={"ANTHROPIC_API_KEY": "ant-agent", "ANTHROPIC_BASE_URL": "http://169.254.169.254"},
        )
        assert isinstance(selection.provider, AnthropicProvider)
        assert selection.provider.base_url == fake.base_url
        request = ChatRequest(model=selection.model, messages=[ChatMessage(role="user", content="hi")])
        assert text_of(await drain(selection.provider.stream(request))) == "hi"
        await registry.aclose()
    assert fake.requests[0].json["model"] == "claude-fake"


async def test_local_engines_need_no_key_but_need_an_address() -> None:
    registry = LLMRegistry(LLMSettings(llm_vllm_base_url="http://10.0.0.5:8000/v1"))
    ollama = registry.select(model="ollama/qwen2.5")
    assert isinstance(ollama.provider, OpenAICompatProvider) and not ollama.fallback
    assert (ollama.provider.base_url, ollama.model) == ("http://127.0.0.1:11434/v1", "qwen2.5")
    vllm = registry.select(engine="vllm", model="meta-llama/Llama-3.1-8B")
    assert (vllm.engine, vllm.model) == ("vllm", "meta-llama/Llama-3.1-8B")
    llamacpp = registry.select(model="llamacpp/x")  # no PARLEY_LLM_LLAMACPP_BASE_URL
    assert llamacpp.fallback and llamacpp.engine == "builtin"
    await registry.aclose()


async def test_the_default_engine_setting_and_explicit_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_LLM_DEFAULT_ENGINE", "ollama")
    monkeypatch.setenv("PARLEY_LLM_OLLAMA_MODEL", "mistral-nemo")
    registry = LLMRegistry()
    selection = registry.select()
    assert (selection.engine, selection.model) == ("ollama", "mistral-nemo")
    builtin = registry.select(model="builtin/echo")
    assert builtin.provider is registry.builtin and not builtin.fallback
    await registry.aclose()


async def test_an_unknown_engine_is_a_bad_request(registry: LLMRegistry) -> None:
    with pytest.raises(LLMError) as caught:
        registry.select(engine="cohere")
    assert caught.value.code is Codes.LLM_BAD_REQUEST


def test_keys_are_secret_in_settings() -> None:
    settings = LLMSettings(llm_openai_api_key="sk-hidden")
    assert "sk-hidden" not in repr(settings)
    assert settings.engine("openai").api_key == "sk-hidden"
