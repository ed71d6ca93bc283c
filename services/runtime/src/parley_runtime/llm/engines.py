"""The engines Parley knows: how each is spoken to. Addresses, keys and default models are
settings (settings.py); this table holds what is fixed by the engine itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from parley_runtime.llm.openai_wire import OpenAIDialect

EngineName = Literal["openai", "deepseek", "mistral", "gemini", "anthropic", "ollama", "vllm", "llamacpp"]


@dataclass(frozen=True)
class Engine:
    name: EngineName
    wire: Literal["openai", "anthropic"]
    # Hosted APIs need a key; local servers usually run without one (a key is still sent if set).
    needs_key: bool
    dialect: OpenAIDialect = field(default_factory=OpenAIDialect)

    @property
    def secret_name(self) -> str:
        """The agent secret that overrides the operator's key, e.g. `OPENAI_API_KEY`."""
        return f"{self.name.upper()}_API_KEY"


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "openai",
            "openai",
            needs_key=True,
            dialect=OpenAIDialect(max_tokens_field="max_completion_tokens", reasoning_effort=True),
        ),
        Engine("deepseek", "openai", needs_key=True),
        Engine(
            "mistral",
            "openai",
            needs_key=True,
            dialect=OpenAIDialect(stream_usage=False, tool_message_name=True),
        ),
        Engine("gemini", "openai", needs_key=True, dialect=OpenAIDialect(reasoning_effort=True)),
        Engine("anthropic", "anthropic", needs_key=True),
        Engine("ollama", "openai", needs_key=False),
        Engine("vllm", "openai", needs_key=False),
        Engine("llamacpp", "openai", needs_key=False),
    )
}
BUILTIN = "builtin"
