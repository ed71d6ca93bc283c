"""The LLM provider layer of the runtime: one streaming interface, several providers.

    registry = LLMRegistry(settings)
    selection = registry.for_agent(snapshot.config, snapshot.secrets)
    request = ChatRequest(model=selection.model, messages=[...], tools=[...])
    async with aclosing(selection.provider.stream(request)) as events:
        async for event in events: ...

See docs/llm-providers.md.
"""

from parley_runtime.llm.anthropic import AnthropicProvider
from parley_runtime.llm.builtin import BuiltinProvider
from parley_runtime.llm.errors import LLMError
from parley_runtime.llm.openai_compat import OpenAICompatProvider
from parley_runtime.llm.openai_wire import OpenAIDialect
from parley_runtime.llm.registry import LLMRegistry, LLMSelection, split_model
from parley_runtime.llm.settings import LLMSettings
from parley_runtime.llm.transport import HttpOptions
from parley_runtime.llm.turn import Turn, TurnBuilder, collect
from parley_runtime.llm.types import (
    ChatMessage,
    ChatRequest,
    Finish,
    FinishReason,
    LLMEvent,
    LLMProvider,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    Usage,
)

__all__ = [
    "AnthropicProvider",
    "BuiltinProvider",
    "ChatMessage",
    "ChatRequest",
    "Finish",
    "FinishReason",
    "HttpOptions",
    "LLMError",
    "LLMEvent",
    "LLMProvider",
    "LLMRegistry",
    "LLMSelection",
    "LLMSettings",
    "OpenAICompatProvider",
    "OpenAIDialect",
    "ReasoningDelta",
    "ReasoningEnd",
    "ReasoningPart",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolSpec",
    "Turn",
    "TurnBuilder",
    "Usage",
    "collect",
    "split_model",
]
