"""`chat_messages`: a session's history as an LLM request's messages, reused from turn to turn;
`LLMPort.stream`: a blueprint agent's answer, measured."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from parley_common import metrics
from parley_common.catalog_contract import AgentConfig, AgentSnapshot, AgentStatus
from parley_common.errors import Codes
from parley_runtime.llm import ChatRequest, Finish, LLMError, LLMEvent, LLMRegistry, TextDelta
from parley_runtime.llm.registry import LLMSelection
from parley_runtime.llm_port import ChatReuse, LLMPort, chat_messages
from parley_runtime.sessions.state import HistoryItem


def _dumps(history: list[HistoryItem], reuse: ChatReuse | None) -> list[dict[str, object]]:
    return [m.model_dump() for m in chat_messages(history, reuse)]


def test_a_sessions_history_messages_are_made_once_per_item() -> None:
    history = [HistoryItem(role="user", content="hi"), HistoryItem(role="assistant", content="hello")]
    reuse: ChatReuse = {}
    first = chat_messages(history, reuse)
    assert _dumps(history, None) == [m.model_dump() for m in first]
    # The next turn's working copy: the same items, in a new list, and the turn's new ones.
    history = [*history, HistoryItem(role="user", content="again")]
    second = chat_messages(history, reuse)
    assert second[0] is first[0] and second[1] is first[1]
    assert [m.model_dump() for m in second] == _dumps(history, None)
    # The oldest dropped (the history's limit): its entry goes; an equal item that is another
    # object (a state read back from Redis) gets a message of its own.
    history = [HistoryItem(role="assistant", content="hello"), *history[2:]]
    third = chat_messages(history, reuse)
    assert third[0] is not first[1] and third[1] is second[2]
    assert [m.model_dump() for m in third] == _dumps(history, None)
    assert sorted(reuse) == sorted(id(item) for item in history)


# ------------------------------------------------------------------------------------ stream


class _Scripted:
    name = "scripted"

    def __init__(self, *items: LLMEvent | LLMError) -> None:
        self.items = items

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        for item in self.items:
            if isinstance(item, LLMError):
                raise item
            yield item


class _Registry(LLMRegistry):
    def __init__(self, llm: _Scripted) -> None:
        super().__init__()
        self.llm = llm

    def select(
        self, *, engine: str | None = None, model: str | None = None, secrets: Mapping[str, str] | None = None
    ) -> LLMSelection:
        return LLMSelection(self.llm, "scripted", model or "")


SNAPSHOT = AgentSnapshot(
    agent_id=str(uuid.uuid4()), version=1, status=AgentStatus.LIVE, config=AgentConfig(name="a")
)


def _first_tokens() -> float:
    return (
        REGISTRY.get_sample_value("parley_llm_time_to_first_token_seconds_count", {"provider": "scripted"})
        or 0.0
    )


async def test_an_answer_is_measured_as_every_call_is_without_passing_through_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`stream` times the first text and counts a failure as `events` does, reading the provider's
    stream itself (a generator fewer per token)."""

    def not_this_way(*_: Any) -> Any:
        raise AssertionError("stream went through events")

    monkeypatch.setattr(LLMPort, "events", not_this_way)
    history = [HistoryItem(role="user", content="hi")]
    said: list[str] = []

    async def on_text(text: str) -> None:
        said.append(text)

    timed = _first_tokens()
    port = LLMPort(_Registry(_Scripted(TextDelta(""), TextDelta("Hel"), TextDelta("lo"), Finish("stop"))))
    await port.stream(SNAPSHOT, "Be kind.", history, on_text)
    assert said == ["Hel", "lo"] and _first_tokens() == timed + 1  # once, at the first text

    failing = LLMError(Codes.LLM_RATE_LIMITED, "scripted", retry_after=2.0, upstream_status=429)
    counted = metrics.LLM_ERRORS.labels("scripted", "llm.rate_limited")
    before = counted._value.get()
    with pytest.raises(LLMError):
        await LLMPort(_Registry(_Scripted(TextDelta("Hel"), failing))).stream(SNAPSHOT, "", history, on_text)
    assert counted._value.get() == before + 1
