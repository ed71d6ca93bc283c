"""Stream events of `POST /api/agent-sessions/:id/trigger`, as @octavus/core 2.0.0 parses them.

Mirrors core's zod `streamEventSchema` (dist/index.js:206-446), which both SDKs use and which
silently drops events that do not match. Optional keys must be absent, not null, so serialise
with `sse()` (it drops None). See docs/octavus-wire.md.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from parley_common.octavus.blocks import DisplayMode

FinishReason = Literal[
    "stop", "tool-calls", "client-tool-calls", "length", "content-filter", "error", "other"
]  # fmt: skip
ErrorType = Literal[
    "authentication_error", "permission_error", "validation_error", "not_found_error", "rate_limit_error",
    "quota_exceeded_error", "provider_error", "provider_overloaded", "provider_timeout", "execution_error",
    "tool_error", "protocol_error", "internal_error", "unknown_error",
]  # fmt: skip
ErrorSource = Literal["platform", "provider", "tool", "client"]


class _Event(BaseModel):
    # Keys are the camelCase of the field names (`tool_call_id` is `toolCallId` on the wire).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class StartEvent(_Event):
    type: Literal["start"] = "start"
    message_id: str | None = None
    execution_id: str | None = None  # needed for tool continuation


class FinishEvent(_Event):
    type: Literal["finish"] = "finish"
    finish_reason: FinishReason
    execution_id: str | None = None


class ProviderErrorInfo(_Event):
    name: str
    model: str | None = None
    status_code: int | None = None
    error_type: str | None = None
    request_id: str | None = None


class ToolErrorInfo(_Event):
    name: str
    call_id: str | None = None


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    error_type: ErrorType
    message: str
    retryable: bool = False
    source: ErrorSource = "platform"
    retry_after: float | None = None
    code: str | None = None
    provider: ProviderErrorInfo | None = None
    tool: ToolErrorInfo | None = None


class _PartEvent(_Event):
    """An event of one text or reasoning part, named by the `id` its `*-start` event gave it."""

    type: str  # each event's own literal; the key stays first
    id: str


class _PartDeltaEvent(_PartEvent):
    delta: str


class TextStartEvent(_PartEvent):
    type: Literal["text-start"] = "text-start"
    response_type: str | None = None  # text is JSON of this type


class TextDeltaEvent(_PartDeltaEvent):
    type: Literal["text-delta"] = "text-delta"


class TextEndEvent(_PartEvent):
    type: Literal["text-end"] = "text-end"


class ReasoningStartEvent(_PartEvent):
    type: Literal["reasoning-start"] = "reasoning-start"


class ReasoningDeltaEvent(_PartDeltaEvent):
    type: Literal["reasoning-delta"] = "reasoning-delta"


class ReasoningEndEvent(_PartEvent):
    type: Literal["reasoning-end"] = "reasoning-end"


class _ToolCallEvent(_Event):
    """An event of one tool call, from its input streaming in to its output."""

    type: str  # each event's own literal; the key stays first
    tool_call_id: str


class ToolInputStartEvent(_ToolCallEvent):
    type: Literal["tool-input-start"] = "tool-input-start"
    tool_name: str
    title: str | None = None


class ToolInputDeltaEvent(_ToolCallEvent):
    type: Literal["tool-input-delta"] = "tool-input-delta"
    input_text_delta: str  # the client SDK parses it as whole JSON


class ToolInputEndEvent(_ToolCallEvent):
    type: Literal["tool-input-end"] = "tool-input-end"


class ToolInputAvailableEvent(_ToolCallEvent):
    type: Literal["tool-input-available"] = "tool-input-available"
    tool_name: str
    input: Any = None


class ToolOutputAvailableEvent(_ToolCallEvent):
    type: Literal["tool-output-available"] = "tool-output-available"
    output: Any = None


class ToolOutputErrorEvent(_ToolCallEvent):
    type: Literal["tool-output-error"] = "tool-output-error"
    error: str


class SourceEvent(_Event):
    """`sourceType: url` needs `url`; `document` needs `mediaType` and `title`."""

    type: Literal["source"] = "source"
    source_type: Literal["url", "document"]
    id: str
    url: str | None = None
    title: str | None = None
    media_type: str | None = None
    filename: str | None = None


class BlockStartEvent(_Event):
    type: Literal["block-start"] = "block-start"
    block_id: str
    block_name: str
    block_type: str
    display: DisplayMode
    description: str | None = None
    output_to_chat: bool | None = None
    thread: str | None = None  # omitted for the main thread


class BlockEndEvent(_Event):
    type: Literal["block-end"] = "block-end"
    block_id: str
    summary: str | None = None


class ResourceUpdateEvent(_Event):
    type: Literal["resource-update"] = "resource-update"
    name: str
    value: Any = None


class PendingToolCall(_Event):
    tool_call_id: str
    tool_name: str
    args: dict[str, Any] = Field(default_factory=dict)
    source: Literal["llm", "block"] | None = None
    output_variable: str | None = None  # block tool-calls
    block_index: int | None = None  # where the handler resumes


class ToolResult(_Event):
    """An entry of the trigger body's `toolResults`."""

    tool_call_id: str
    tool_name: str | None = None
    result: Any = None
    error: str | None = None
    output_variable: str | None = None
    block_index: int | None = None


class ToolRequestEvent(_Event):
    """Ends a round: must be followed by `finish` with `finishReason: tool-calls`."""

    type: Literal["tool-request"] = "tool-request"
    tool_calls: list[PendingToolCall]


class ClientToolRequestEvent(_Event):
    """Made by the server SDK for tools it has no handler for; never sent by the platform."""

    type: Literal["client-tool-request"] = "client-tool-request"
    execution_id: str
    tool_calls: list[PendingToolCall]
    server_tool_results: list[ToolResult] | None = None


class FileAvailableEvent(_Event):
    type: Literal["file-available"] = "file-available"
    id: str
    media_type: str
    url: str
    filename: str | None = None
    size: int | None = None
    tool_call_id: str | None = None


StreamEvent = Annotated[
    StartEvent | FinishEvent | ErrorEvent | TextStartEvent | TextDeltaEvent | TextEndEvent
    | ReasoningStartEvent | ReasoningDeltaEvent | ReasoningEndEvent | ToolInputStartEvent
    | ToolInputDeltaEvent | ToolInputEndEvent | ToolInputAvailableEvent | ToolOutputAvailableEvent
    | ToolOutputErrorEvent | SourceEvent | BlockStartEvent | BlockEndEvent | ResourceUpdateEvent
    | ToolRequestEvent | ClientToolRequestEvent | FileAvailableEvent,
    Field(discriminator="type"),
]  # fmt: skip

STREAM_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


class TriggerBody(BaseModel):
    """Body of `POST /api/agent-sessions/:id/trigger` from @octavus/server-sdk 2.0.0: a new
    trigger `{triggerName, input?}`, a server-side continuation (the same plus `executionId?` and
    `toolResults`), or a client continuation `{executionId, toolResults}` without a trigger."""

    # camelCase keys, as _Event; unknown keys ignored, as the Octavus API does.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    trigger_name: str | None = None
    input: dict[str, Any] | None = None
    execution_id: str | None = None
    tool_results: list[ToolResult] | None = None


def event_json(event: BaseModel) -> str:
    """One event as the SDKs parse it: camelCase keys, optional keys absent rather than null."""
    return json.dumps(event.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"))


def sse(event: BaseModel) -> str:
    """One SSE frame: `data: <json>` and a blank line (the SDKs split on `\\n`, one event a line)."""
    return f"data: {event_json(event)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
