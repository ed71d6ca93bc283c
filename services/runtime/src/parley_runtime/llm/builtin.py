"""The built-in engine: used when no provider key is configured, so the platform runs offline.

Its output is a pure function of the request (the same request always yields the same events),
streamed one word at a time with a fixed pause, so timeouts and cancellation behave as with a
real model. The rules are documented in docs/llm-providers.md ("The built-in engine"); keep the
two in step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from parley_runtime.llm import types as t
from parley_runtime.llm.builtin_roles import disclosure_reply, scripted_reply
from parley_runtime.llm.transport import traced

GREETING = "Hello! How can I help you today?"
QUOTE_LIMIT = 200
ARGUMENT_CHUNK = 16  # characters of tool-call arguments per streamed delta
# At pace 0 the tokens come as a burst, as many tokens of a provider's stream do from one socket
# read: no turn of the event loop between them (a ~14-token answer made 14 of a worker's ~25 loop
# turns a turn), but one every this many, so a long answer can still be cancelled part way.
BURST = 32
_TRIGGER = re.compile(r"\s*call\s+([A-Za-z0-9_-]{1,64})(?:\s+(.*?))?\s*", re.IGNORECASE | re.DOTALL)
_PERSONA = re.compile(r"\byou are\s+([^.!?\n]{1,80})", re.IGNORECASE)
_TOKEN = re.compile(r"\S+\s*")


class BuiltinProvider:
    name = "builtin"

    def __init__(self, *, pace_ms: float = 20.0) -> None:
        self.pace_s = max(0.0, pace_ms) / 1000

    def __repr__(self) -> str:
        return f"BuiltinProvider(pace_ms={self.pace_s * 1000:g})"

    def stream(self, request: t.ChatRequest) -> AsyncGenerator[t.LLMEvent, None]:
        return traced(self.name, request.model or self.name, self._events(request))

    async def _events(self, request: t.ChatRequest) -> AsyncGenerator[t.LLMEvent, None]:
        emitted = 0
        if request.thinking_budget() is not None:
            thought = _reasoning(request)
            for token in _TOKEN.findall(thought):
                await self._pause(emitted)
                emitted += 1
                yield t.ReasoningDelta(token)
            yield t.ReasoningEnd(thought)
        call = _tool_call(request)
        if call is not None:
            name, arguments = call
            call_id = _call_id(request, name, arguments)
            yield t.ToolCallStart(call_id, name)
            encoded = json.dumps(arguments, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
            for i in range(0, len(encoded), ARGUMENT_CHUNK):
                await self._pause(emitted)
                emitted += 1
                yield t.ToolCallDelta(call_id, encoded[i : i + ARGUMENT_CHUNK])
            yield t.ToolCallEnd(call_id, name, arguments)
            yield t.Usage(_input_tokens(request), emitted)
            yield t.Finish("tool_calls")
            return
        tokens = _TOKEN.findall(reply_text(request))
        reason: t.FinishReason = "stop"
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, reason = tokens[: request.max_tokens], "length"
        for token in tokens:
            await self._pause(emitted)
            emitted += 1
            yield t.TextDelta(token)
        yield t.Usage(_input_tokens(request), emitted)
        yield t.Finish(reason)

    async def _pause(self, emitted: int) -> None:
        """Before each token: the pace, cancellable; at pace 0, a turn of the loop every `BURST`."""
        if self.pace_s:
            await asyncio.sleep(self.pace_s)
        elif emitted % BURST == BURST - 1:
            await asyncio.sleep(0)


def reply_text(request: t.ChatRequest) -> str:
    """The text reply (when the request does not trigger a tool call)."""
    scripted = scripted_reply(request)  # simulated user or auditor of an agent test
    if scripted is not None:
        return scripted
    last = _last_turn(request.messages)
    if last is None or last.role == "assistant":
        return GREETING
    if last.role == "tool":
        return f"The {_tool_name(request.messages, last)} tool returned: {_quote(last.content)}"
    match = _TRIGGER.fullmatch(last.content)
    if match and match.group(1) in {tool.name for tool in request.tools}:
        return f"I cannot call {match.group(1)}: its arguments must be a JSON object."
    disclosed = disclosure_reply(request)
    if disclosed is not None:
        return disclosed
    persona = _persona(request.messages)
    text = (
        f'As {persona}, I heard: "{_quote(last.content)}".'
        if persona
        else f'You said: "{_quote(last.content)}".'
    )
    if request.tools:
        text += " Tools I can call: " + ", ".join(tool.name for tool in request.tools) + "."
    return text


def _tool_call(request: t.ChatRequest) -> tuple[str, dict[str, Any]] | None:
    last = _last_turn(request.messages)
    if last is None or last.role != "user":
        return None
    match = _TRIGGER.fullmatch(last.content)
    if not match or match.group(1) not in {tool.name for tool in request.tools}:
        return None
    raw = match.group(2) or ""
    if not raw:
        return match.group(1), {}
    try:
        arguments = json.loads(raw)
    except ValueError:
        return None
    return (match.group(1), arguments) if isinstance(arguments, dict) else None


def _last_turn(messages: list[t.ChatMessage]) -> t.ChatMessage | None:
    return next((m for m in reversed(messages) if m.role != "system"), None)


def _persona(messages: list[t.ChatMessage]) -> str | None:
    system = "\n".join(m.content for m in messages if m.role == "system")
    match = _PERSONA.search(system)
    return match.group(1).strip().rstrip(",;:") if match else None


def _tool_name(messages: list[t.ChatMessage], result: t.ChatMessage) -> str:
    if result.name:
        return result.name
    for m in messages:
        for call in m.tool_calls:
            if call.id == result.tool_call_id:
                return call.name
    return str(result.tool_call_id)


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1] + "…"


def _reasoning(request: t.ChatRequest) -> str:
    last = _last_turn(request.messages)
    words = len(last.content.split()) if last else 0
    role = last.role if last else "nobody"
    return f"The last message is from the {role} and has {words} words. I answer with the built-in template."


def _input_tokens(request: t.ChatRequest) -> int:
    return sum(len(m.content.split()) for m in request.messages)


def _call_id(request: t.ChatRequest, name: str, arguments: dict[str, Any]) -> str:
    # Unique per position in the conversation, identical for identical requests.
    seed = json.dumps([len(request.messages), name, arguments], sort_keys=True)
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
