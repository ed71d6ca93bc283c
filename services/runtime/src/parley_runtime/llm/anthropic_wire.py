"""Anthropic Messages API wire format: request bodies and the decoding of streamed events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parley_runtime.llm import types as t
from parley_runtime.llm.errors import error_from_payload, protocol_error
from parley_runtime.llm.history import results_after_calls
from parley_runtime.llm.toolcalls import ToolCallBuffer

API_VERSION = "2023-06-01"
MIN_THINKING_BUDGET = 1024  # the API's lower bound for `budget_tokens`

_FINISH: dict[str, t.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "refusal": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}


def build_body(request: t.ChatRequest, model: str, *, default_max_tokens: int) -> dict[str, Any]:
    system, messages = messages_to_wire(request.messages)
    # The API requires max_tokens.
    max_tokens = request.max_tokens or default_max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages, "stream": True}
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": tool.parameters,
            }
            for tool in request.tools
        ]
    budget = request.thinking_budget()
    if budget is not None:
        budget = max(MIN_THINKING_BUDGET, budget)
        # budget_tokens must be below max_tokens: the answer keeps its own allowance on top.
        if max_tokens <= budget:
            body["max_tokens"] = budget + default_max_tokens
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif request.temperature is not None:
        # Thinking forbids temperature; Anthropic's range is 0..1 where OpenAI's is 0..2.
        body["temperature"] = min(request.temperature, 1.0)
    return body


def messages_to_wire(messages: list[t.ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """System messages (wherever they are) become the `system` field; tool results become
    `tool_result` blocks of a user turn; consecutive turns of one role are merged, since the API
    wants user and assistant to alternate."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return  # the API rejects empty content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in results_after_calls(messages):
        if m.role == "system":
            if m.content:
                system.append(m.content)
        elif m.role == "user":
            add("user", [{"type": "text", "text": m.content}] if m.content else [])
        elif m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
            if m.content:
                result["content"] = m.content
            add("user", [result])
        else:
            add("assistant", _assistant_blocks(m))
    for turn in turns:
        if turn["role"] == "user":  # tool results must come before any text of their turn
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return "\n\n".join(system), turns


def _assistant_blocks(m: t.ChatMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in m.reasoning:  # only verifiable blocks can be sent back
        if part.redacted:
            blocks.append({"type": "redacted_thinking", "data": part.redacted})
        elif part.signature:
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
    return blocks


@dataclass
class _Block:
    kind: str
    tool: ToolCallBuffer | None = None
    initial_input: dict[str, Any] = field(default_factory=dict)
    thinking: list[str] = field(default_factory=list)
    signature: str | None = None
    redacted: str | None = None


class EventDecoder:
    """Turns `message_start` … `message_stop` events into provider-neutral events."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._blocks: dict[int, _Block] = {}
        self._usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self.done = False

    def feed(self, payload: Any) -> list[t.LLMEvent]:
        if not isinstance(payload, dict):
            raise protocol_error(self.provider, "stream event is not a JSON object")
        kind = payload.get("type")
        if kind == "message_start":
            self._take_usage((payload.get("message") or {}).get("usage"))
        elif kind == "content_block_start":
            return self._start(payload)
        elif kind == "content_block_delta":
            return self._delta(payload)
        elif kind == "content_block_stop":
            return self._stop(payload)
        elif kind == "message_delta":
            self._stop_reason = (payload.get("delta") or {}).get("stop_reason") or self._stop_reason
            self._take_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise error_from_payload(self.provider, payload)
        return []  # ping, and event types newer than this code

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})

    def _block(self, payload: dict[str, Any]) -> _Block:
        block = self._blocks.get(payload.get("index", -1))
        if block is None:
            raise protocol_error(self.provider, f"event for unknown content block {payload.get('index')!r}")
        return block

    def _start(self, payload: dict[str, Any]) -> list[t.LLMEvent]:
        content = payload.get("content_block") or {}
        kind = str(content.get("type"))
        block = self._blocks[payload.get("index", len(self._blocks))] = _Block(kind)
        if kind == "text" and content.get("text"):
            return [t.TextDelta(content["text"])]
        if kind == "tool_use":
            block.tool = ToolCallBuffer(str(content.get("id")), str(content.get("name")))
            if isinstance(content.get("input"), dict):
                block.initial_input = content["input"]
            return [t.ToolCallStart(block.tool.id, block.tool.name)]
        if kind == "thinking" and content.get("thinking"):
            block.thinking.append(content["thinking"])
            return [t.ReasoningDelta(content["thinking"])]
        if kind == "redacted_thinking":
            block.redacted = str(content.get("data", ""))
        return []

    def _delta(self, payload: dict[str, Any]) -> list[t.LLMEvent]:
        block = self._block(payload)
        delta = payload.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [t.TextDelta(delta["text"])]
        if kind == "input_json_delta" and block.tool is not None and delta.get("partial_json"):
            block.tool.parts.append(delta["partial_json"])
            return [t.ToolCallDelta(block.tool.id, delta["partial_json"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            block.thinking.append(delta["thinking"])
            return [t.ReasoningDelta(delta["thinking"])]
        if kind == "signature_delta":
            block.signature = (block.signature or "") + str(delta.get("signature", ""))
        return []

    def _stop(self, payload: dict[str, Any]) -> list[t.LLMEvent]:
        block = self._block(payload)
        if block.tool is not None:
            if not block.tool.parts and block.initial_input:
                return [t.ToolCallEnd(block.tool.id, block.tool.name, block.initial_input)]
            return [block.tool.end(self.provider)]
        if block.kind == "thinking":
            return [t.ReasoningEnd("".join(block.thinking), signature=block.signature)]
        if block.kind == "redacted_thinking":
            return [t.ReasoningEnd("", redacted=block.redacted)]
        return []

    def end(self) -> list[t.LLMEvent]:
        if not self.done:
            raise protocol_error(self.provider, "the stream ended before message_stop")
        u = self._usage
        # Cached prompt tokens are reported apart; count them in, like OpenAI's prompt_tokens.
        prompt = sum(
            u.get(k, 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        reason = _FINISH.get(self._stop_reason or "end_turn", "stop")
        return [t.Usage(prompt, u.get("output_tokens", 0)), t.Finish(reason, self._stop_reason)]
