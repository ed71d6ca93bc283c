"""`chat_messages`: a session's history as an LLM request's messages, reused from turn to turn."""

from __future__ import annotations

from parley_runtime.llm_port import ChatReuse, chat_messages
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
