"""How a session of either engine asks the LLM layer (`parley_runtime.llm`) for an answer.

The interpreter gives the system prompt and the conversation history; this turns them into a
`ChatRequest` for the provider the registry picks for the agent (engine and model from its config,
key from its secrets or the settings, the built-in engine when nothing is configured) and passes
each text delta on as it arrives. Cancelling the task that runs `stream` closes the provider's
stream at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from parley_common import metrics
from parley_common.catalog_contract import AgentSnapshot
from parley_common.errors import ParleyError
from parley_runtime.llm import ChatMessage, ChatRequest, LLMEvent, LLMRegistry, LLMSelection, TextDelta
from parley_runtime.sessions.state import HistoryItem

OnText = Callable[[str], Awaitable[None]]


class LLMPort:
    """The one way both engines reach an LLM (the blueprint interpreter through `stream`, the
    Octavus executor through `events`), so every turn is measured the same way."""

    def __init__(self, registry: LLMRegistry) -> None:
        self.registry = registry

    async def events(self, selection: LLMSelection, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        """The provider's events for `request`, timing the first token and counting failures by
        engine and code."""
        started, first = time.perf_counter(), True
        try:
            async with aclosing(selection.provider.stream(request)) as events:
                async for event in events:
                    if first and isinstance(event, TextDelta) and event.text:
                        first = False
                        metrics.LLM_TIME_TO_FIRST_TOKEN.labels(selection.engine).observe(
                            time.perf_counter() - started
                        )
                    yield event
        except ParleyError as exc:
            metrics.LLM_ERRORS.labels(selection.engine, exc.code.code).inc()
            raise

    async def stream(
        self, snapshot: AgentSnapshot, system: str, history: list[HistoryItem], on_text: OnText
    ) -> None:
        """A blueprint agent's answer: its engine and model, the system prompt and the history;
        each text delta goes to `on_text` as it arrives."""
        selection = self.registry.for_agent(snapshot.config, snapshot.secrets)
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages += [ChatMessage(role=item.role, content=item.content) for item in history]
        request = ChatRequest(model=selection.model, messages=messages)
        async with aclosing(self.events(selection, request)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    await on_text(event.text)

    async def aclose(self) -> None:
        await self.registry.aclose()
