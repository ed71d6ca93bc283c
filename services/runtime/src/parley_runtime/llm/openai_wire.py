"""OpenAI Chat Completions wire format: request bodies and the decoding of streamed chunks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parley_runtime.llm import types as t
from parley_runtime.llm.errors import error_from_payload, protocol_error
from parley_runtime.llm.history import results_after_calls
from parley_runtime.llm.toolcalls import ToolCallBuffer


@dataclass(frozen=True)
class OpenAIDialect:
    """Where OpenAI-compatible servers differ on the wire."""

    # `stream_options.include_usage`; Mistral rejects the field (and sends usage anyway).
    stream_usage: bool = True
    # OpenAI's reasoning models reject `max_tokens`; everyone else knows only `max_tokens`.
    max_tokens_field: str = "max_tokens"
    # Send `reasoning_effort` (low/medium/high) when the request asks for thinking.
    reasoning_effort: bool = False
    # Mistral's tool messages carry the function `name`.
    tool_message_name: bool = False


_FINISH: dict[str, t.FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "content_filter": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def build_body(request: t.ChatRequest, model: str, dialect: OpenAIDialect) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_wire(m, dialect) for m in results_after_calls(request.messages)],
        "stream": True,
    }
    if dialect.stream_usage:
        body["stream_options"] = {"include_usage": True}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[dialect.max_tokens_field] = request.max_tokens
    level = request.thinking_level()
    if level and dialect.reasoning_effort:
        body["reasoning_effort"] = level
    return body


def message_to_wire(message: t.ChatMessage, dialect: OpenAIDialect) -> dict[str, Any]:
    # Reasoning is never sent back: DeepSeek rejects `reasoning_content` in input messages.
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["content"] = message.content or None
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
                for call in message.tool_calls
            ]
        return out
    if message.role == "tool":
        out = {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
        if dialect.tool_message_name and message.name:
            out["name"] = message.name
        return out
    return {"role": message.role, "content": message.content}


class ChunkDecoder:
    """Turns `chat.completion.chunk` objects into events (choice 0 only; Parley never asks n>1).

    Tool calls are keyed by their `index`; servers that omit it (some Gemini and Ollama versions)
    get one slot per new `id`. Calls are closed (`ToolCallEnd`) when `finish_reason` arrives,
    because servers may interleave the fragments of parallel calls. Usage arrives in a chunk after
    `finish_reason`, so `Usage` and `Finish` are produced by `end()`.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._calls: dict[int, ToolCallBuffer] = {}
        self._started: set[int] = set()
        self._key_by_id: dict[str, int] = {}
        self._reasoning: list[str] | None = None
        self._finish_raw: str | None = None
        self._usage: t.Usage | None = None
        self._made_tool_calls = False

    def feed(self, chunk: Any) -> list[t.LLMEvent]:
        if not isinstance(chunk, dict):
            raise protocol_error(self.provider, "stream chunk is not a JSON object")
        if chunk.get("error"):
            raise error_from_payload(self.provider, chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = t.Usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )
        events: list[t.LLMEvent] = []
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    def _choice(self, choice: dict[str, Any]) -> list[t.LLMEvent]:
        events: list[t.LLMEvent] = []
        delta = choice.get("delta") or {}
        # DeepSeek and vLLM: `reasoning_content`; OpenRouter and newer vLLM: `reasoning`.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._reasoning = [*(self._reasoning or []), reasoning]
            events.append(t.ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events += self._close_reasoning()
            events.append(t.TextDelta(content))
        for fragment in delta.get("tool_calls") or []:
            events += self._close_reasoning()
            events += self._tool_fragment(fragment)
        reason = choice.get("finish_reason")
        if reason:
            if reason == "error":  # Mistral: generation failed upstream
                raise error_from_payload(self.provider, {"message": "finish_reason error"})
            self._finish_raw = str(reason)
            events += self._close_reasoning()
            events += self._end_calls()
        return events

    def _tool_fragment(self, fragment: Any) -> list[t.LLMEvent]:
        if not isinstance(fragment, dict):
            raise protocol_error(self.provider, "tool call fragment is not a JSON object")
        function = fragment.get("function") or {}
        index, call_id = fragment.get("index"), fragment.get("id") or None
        if isinstance(index, int):
            key = index
        elif call_id is not None and call_id not in self._key_by_id:
            key = max(self._calls, default=-1) + 1
        elif call_id is not None:
            key = self._key_by_id[call_id]
        else:
            key = max(self._calls, default=0)
        buf = self._calls.get(key)
        if buf is None:
            buf = self._calls[key] = ToolCallBuffer(id=str(call_id or f"call_{key}"), name="")
            self._key_by_id[buf.id] = key
        events: list[t.LLMEvent] = []
        name = function.get("name")
        if isinstance(name, str) and name and not buf.name:
            buf.name = name
        if buf.name and key not in self._started:
            self._started.add(key)
            events.append(t.ToolCallStart(buf.id, buf.name))
            if buf.parts:  # arguments that came before the name
                events.append(t.ToolCallDelta(buf.id, "".join(buf.parts)))
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the object itself
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            buf.parts.append(arguments)
            if key in self._started:
                events.append(t.ToolCallDelta(buf.id, arguments))
        return events

    def _close_reasoning(self) -> list[t.LLMEvent]:
        if self._reasoning is None:
            return []
        text, self._reasoning = "".join(self._reasoning), None
        return [t.ReasoningEnd(text)]

    def _end_calls(self) -> list[t.LLMEvent]:
        events: list[t.LLMEvent] = []
        for key in sorted(self._calls):
            buf = self._calls[key]
            if not buf.name:
                raise protocol_error(self.provider, f"tool call {buf.id!r} has no function name")
            events.append(buf.end(self.provider))
        self._made_tool_calls |= bool(self._calls)
        self._calls.clear()
        self._started.clear()
        return events

    def end(self, saw_done: bool) -> list[t.LLMEvent]:
        """Called when the stream is over (`[DONE]` or end of body)."""
        if self._finish_raw is None and not saw_done:
            raise protocol_error(self.provider, "the stream ended without a finish_reason or [DONE]")
        events = self._close_reasoning() + self._end_calls()
        if self._usage is not None:
            events.append(self._usage)
        reason = _FINISH.get(self._finish_raw or "stop", "stop")
        if self._made_tool_calls and reason == "stop":
            reason = "tool_calls"  # Gemini says "stop" after tool calls
        events.append(t.Finish(reason, self._finish_raw))
        return events
