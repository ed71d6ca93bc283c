"""How a session of either engine asks the LLM layer (`parley_runtime.llm`) for an answer.

The interpreter gives the system prompt and the conversation history; this turns them into a
`ChatRequest` for the provider the registry picks for the agent (engine and model from its config,
key from its secrets or the settings, the built-in engine when nothing is configured) and passes
each text delta on as it arrives. Cancelling the task that runs `stream` closes the provider's
stream at once.
"""

from __future__ import annotations

import operator
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from parley_common import metrics
from parley_common.catalog_contract import AgentSnapshot
from parley_common.errors import ParleyError
from parley_runtime.llm import ChatMessage, ChatRequest, LLMEvent, LLMRegistry, LLMSelection, TextDelta
from parley_runtime.sessions.state import HistoryItem

OnText = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class ChatReuse:
    """A session's last request's messages of its history, by position: `items[i]` made
    `messages[i]` (the items are kept: an item is known by its identity). See `chat_messages`.
    Empty tuples until the first request: a held session that never spoke keeps 48 bytes here."""

    items: Sequence[HistoryItem] = ()
    messages: Sequence[ChatMessage] = ()


def chat_messages(history: list[HistoryItem], reuse: ChatReuse | None = None) -> list[ChatMessage]:
    """The request's messages of `history`. With `reuse` (one session's, kept from turn to turn),
    the messages made for the items of the last request are used again: a turn's working copy
    shares the committed items, which are never edited (sessions/state.py), and nothing edits a
    request's messages, so only the turn's new items are built (and validated). A history only
    loses its oldest items and gains new ones at its end, so the last request's items are found as
    one run, by identity, with list operations of C's speed: a full history
    (`runtime_history_max_messages`, 100) was 100 messages built per turn, then a Python loop over
    100 items. A history that is not such a continuation (read back from Redis by a new owner, or
    after a turn that was abandoned) is built anew."""
    if reuse is None:
        return [ChatMessage(role=item.role, content=item.content) for item in history]
    start = _continued_from(reuse.items, history)
    kept = len(reuse.items) - start
    messages = [
        *reuse.messages[start:],
        *(ChatMessage(role=item.role, content=item.content) for item in history[kept:]),
    ]
    reuse.items, reuse.messages = list(history), messages  # copies: the caller's lists may change
    return list(messages)


def _continued_from(old: Sequence[HistoryItem], new: Sequence[HistoryItem]) -> int:
    """Where in `old` the history `new` begins, when `new` is `old` from there on and then more
    (`len(old)`: nothing of `old` is reused)."""
    if not old or not new:
        return len(old)
    try:
        start = list(map(id, old)).index(id(new[0]))  # `old` holds its items: an id is theirs
    except ValueError:
        return len(old)
    shared = len(old) - start
    if shared > len(new) or not all(map(operator.is_, old[start:], new[:shared])):
        return len(old)
    return start


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
        self,
        snapshot: AgentSnapshot,
        system: str,
        history: list[HistoryItem],
        on_text: OnText,
        reuse: ChatReuse | None = None,
    ) -> None:
        """A blueprint agent's answer: its engine and model, the system prompt and the history
        (its messages made again only for new items, given the session's `reuse`); each text
        delta goes to `on_text` as it arrives."""
        selection = self.registry.for_agent(snapshot.config, snapshot.secrets)
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages += chat_messages(history, reuse)
        request = ChatRequest(model=selection.model, messages=messages)
        async with aclosing(self.events(selection, request)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    await on_text(event.text)

    async def aclose(self) -> None:
        await self.registry.aclose()
