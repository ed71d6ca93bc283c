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
    reuse = ChatReuse()
    first = chat_messages(history, reuse)
    assert _dumps(history, None) == [m.model_dump() for m in first]
    # The next turn's working copy: the same items, in a new list, and the turn's new ones.
    history = [*history, HistoryItem(role="user", content="again")]
    second = chat_messages(history, reuse)
    assert second[0] is first[0] and second[1] is first[1]
    assert [m.model_dump() for m in second] == _dumps(history, None)
    # The oldest dropped (the history's limit), two new ones: the rest is reused as it was.
    history = [
        *history[1:],
        HistoryItem(role="assistant", content="yes"),
        HistoryItem(role="user", content="ok"),
    ]
    third = chat_messages(history, reuse)
    assert third[0] is second[1] and third[1] is second[2]
    assert [m.model_dump() for m in third] == _dumps(history, None)
    assert reuse.items == history and reuse.items is not history  # what is kept is a copy
    # What is kept is the reuse's own: neither the caller's list nor the returned one changes it.
    third.append(third[0])
    history.append(HistoryItem(role="assistant", content="late"))
    assert len(reuse.messages) == len(reuse.items) == 4


def test_a_history_that_does_not_continue_the_last_is_made_anew() -> None:
    """Equal items that are other objects (a state read back from Redis by a new owner), or a
    history whose last request is not its beginning (an abandoned turn's question gone): every
    message is made again, and right."""
    history = [HistoryItem(role="user", content="hi"), HistoryItem(role="assistant", content="hello")]
    reuse = ChatReuse()
    first = chat_messages(history, reuse)
    read_back = [HistoryItem(role=item.role, content=item.content) for item in history]
    again = chat_messages(read_back, reuse)
    assert not any(a is b for a, b in zip(again, first, strict=True))
    assert [m.model_dump() for m in again] == _dumps(read_back, None)
    abandoned = [*read_back, HistoryItem(role="user", content="cut short")]
    chat_messages(abandoned, reuse)
    retried = [*read_back, HistoryItem(role="user", content="next")]
    after = chat_messages(retried, reuse)
    assert [m.model_dump() for m in after] == _dumps(retried, None)
    assert chat_messages([], reuse) == [] and reuse.items == []


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
