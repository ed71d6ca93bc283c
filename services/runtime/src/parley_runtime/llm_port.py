"""How a session asks the LLM layer (`parley_runtime.llm`) for an answer.

The interpreter gives the system prompt and the conversation history; this turns them into a
`ChatRequest` for the provider the registry picks for the agent (engine and model from its config,
key from its secrets or the settings, the built-in engine when nothing is configured) and passes
each text delta on as it arrives. Cancelling the task that runs `stream` closes the provider's
stream at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from parley_common import metrics
from parley_common.catalog_contract import AgentSnapshot
from parley_common.errors import ParleyError
from parley_runtime.llm import ChatMessage, ChatRequest, LLMRegistry, TextDelta
from parley_runtime.sessions.state import HistoryItem

OnText = Callable[[str], Awaitable[None]]


class LLMPort:
    def __init__(self, registry: LLMRegistry) -> None:
        self.registry = registry

    async def stream(
        self, snapshot: AgentSnapshot, system: str, history: list[HistoryItem], on_text: OnText
    ) -> None:
        selection = self.registry.for_agent(snapshot.config, snapshot.secrets)
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages += [ChatMessage(role=item.role, content=item.content) for item in history]
        request = ChatRequest(model=selection.model, messages=messages)
        started, first = time.perf_counter(), True
        try:
            async with aclosing(selection.provider.stream(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta) and event.text:
                        if first:
                            first = False
                            metrics.LLM_TIME_TO_FIRST_TOKEN.labels(selection.engine).observe(
                                time.perf_counter() - started
                            )
                        await on_text(event.text)
        except ParleyError as exc:
            metrics.LLM_ERRORS.labels(selection.engine, exc.code.code).inc()
            raise

    async def aclose(self) -> None:
        await self.registry.aclose()
