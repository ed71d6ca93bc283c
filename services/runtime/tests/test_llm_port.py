"""`chat_messages`: a session's history as an LLM request's messages, reused from turn to turn;
a `ChatRequest` takes them as made."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest
from pydantic import ValidationError

from parley_runtime.llm import ChatMessage, ChatRequest
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


def test_a_request_takes_the_messages_it_is_given_as_made() -> None:
    """Each message's model validator ran when it was made: a request (which carries the whole
    history) does not run it again for every message, and keeps the very objects."""
    messages = [ChatMessage(role="user" if i % 2 else "assistant", content=f"m{i}") for i in range(50)]
    validator = ChatMessage.__pydantic_decorators__.model_validators["_role_fields"].func
    calls = 0

    def count(frame: FrameType, event: str, _: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_code is validator.__code__:
            calls += 1

    sys.setprofile(count)
    try:
        request = ChatRequest(model="m", messages=messages)
    finally:
        sys.setprofile(None)
    assert calls == 0
    assert request.messages is not messages  # a list of its own
    assert all(a is b for a, b in zip(request.messages, messages, strict=True))
    # Anything else is validated as before, the role rules included.
    assert ChatRequest(messages=[{"role": "user", "content": "x"}]).messages[0].content == "x"
    for bad in ([{"role": "tool", "content": "x"}], [messages[0], {"role": "tool", "content": "x"}]):
        with pytest.raises(ValidationError, match="tool_call_id"):
            ChatRequest(messages=bad)
