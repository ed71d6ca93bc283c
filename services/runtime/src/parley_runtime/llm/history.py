"""Normalising a conversation before it goes on the wire."""

from __future__ import annotations

from parley_runtime.llm.types import ChatMessage


def results_after_calls(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Move each tool result right after the assistant message that made the call.

    In a voice session the user may speak while a tool runs, so the history can hold
    `assistant(tool_calls), user, tool`. OpenAI and Anthropic both reject that order: results
    must directly follow their call. Relative order is kept; a result whose call is not in the
    history stays where it is.
    """
    owner = {call.id: i for i, m in enumerate(messages) for call in m.tool_calls}
    moved: dict[int, list[ChatMessage]] = {}
    skip: set[int] = set()
    for j, m in enumerate(messages):
        i = owner.get(m.tool_call_id or "") if m.role == "tool" else None
        if i is not None and i < j:
            moved.setdefault(i, []).append(m)
            skip.add(j)
    out: list[ChatMessage] = []
    for i, m in enumerate(messages):
        if i not in skip:
            out.append(m)
            out += moved.get(i, [])
    return out
