"""The agent-sessions API: response bodies as @octavus/server-sdk 2.0.0 parses them, and the bus
contract between the session gateway (HTTP + SSE) and the runtime workers that own the sessions.

Bodies mirror @octavus/core's zod schemas (chatMessageSchema, uiMessageSchema, core
dist/index.js:485-598) and the server SDK's session schemas (server-sdk dist/index.js:389-418).
Optional keys must be absent rather than null: dump with `by_alias=True, exclude_none=True`.
See docs/octavus-wire.md and docs/octavus-sessions.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley_common.auth_contract import Principal
from parley_common.errors import ErrorEnvelope
from parley_common.octavus.events import TriggerBody

MAX_ID = 200


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- internal messages (`GET /api/agent-sessions/:id`) -------------------------------------------

ToolCallStatus = Literal["pending", "streaming", "available", "error"]


class ToolCallInfo(_Wire):
    id: str
    name: str
    description: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    status: ToolCallStatus
    result: Any = None
    error: str | None = None


class MessagePart(_Wire):
    type: Literal["text", "reasoning", "tool-call", "source", "file", "object"]
    visible: bool
    content: str | None = None
    tool_call: ToolCallInfo | None = Field(default=None, alias="toolCall")
    source: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    object: dict[str, Any] | None = None  # {id, typeName, value}
    thread: str | None = None  # absent for the main thread


class ChatMessage(_Wire):
    id: str
    role: Literal["user", "assistant", "system"]
    parts: list[MessagePart]
    created_at: str = Field(alias="createdAt")
    visible: bool | None = None
    content: str
    tool_calls: list[ToolCallInfo] | None = Field(default=None, alias="toolCalls")
    reasoning: str | None = None
    reasoning_signature: str | None = Field(default=None, alias="reasoningSignature")


class SessionState(_Wire):
    """An active session, as `agentSessions.get()` parses it."""

    id: str
    agent_id: str = Field(alias="agentId")
    input: dict[str, Any]
    variables: dict[str, Any]
    resources: dict[str, Any]
    messages: list[ChatMessage]
    status: Literal["active"] = "active"
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")


# --- UI messages (`?format=ui`, `restore`) --------------------------------------------------------

PartStatus = Literal["streaming", "done"]


class UITextPart(_Wire):
    type: Literal["text", "reasoning"]
    text: str
    status: PartStatus = "done"
    thread: str | None = None


class UIToolCallPart(_Wire):
    type: Literal["tool-call"]
    tool_call_id: Annotated[str, Field(max_length=MAX_ID)] = Field(alias="toolCallId")
    tool_name: str = Field(alias="toolName")
    display_name: str | None = Field(default=None, alias="displayName")
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    # `cancelled` is what @octavus/client-sdk stores when a stream is stopped; it is accepted on
    # restore and served as `error` (core's zod schema would reject it).
    status: Literal["pending", "running", "done", "error", "cancelled"]
    thread: str | None = None


class UIOperationPart(_Wire):
    type: Literal["operation"]
    operation_id: str = Field(alias="operationId")
    name: str
    operation_type: str = Field(alias="operationType")
    status: Literal["running", "done", "cancelled"]
    thread: str | None = None


class UIOtherPart(_Wire):
    """source, file and object parts: kept as they are (Parley produces none of them itself)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["source", "file", "object"]
    thread: str | None = None


UIPart = Annotated[UITextPart | UIToolCallPart | UIOperationPart | UIOtherPart, Field(discriminator="type")]


class UIMessage(_Wire):
    id: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
    role: Literal["user", "assistant"]
    parts: list[UIPart]
    status: PartStatus = "done"
    created_at: str = Field(alias="createdAt")


class UISessionState(_Wire):
    session_id: str = Field(alias="sessionId")
    agent_id: str = Field(alias="agentId")
    messages: list[UIMessage]
    status: Literal["active"] = "active"


class ExpiredSession(_Wire):
    """What both GETs return once a session's state has expired (restore brings it back)."""

    session_id: str = Field(alias="sessionId")
    agent_id: str = Field(alias="agentId")
    status: Literal["expired"] = "expired"
    created_at: str = Field(alias="createdAt")


class SessionCreated(_Wire):
    session_id: str = Field(alias="sessionId")


class SessionRestored(_Wire):
    session_id: str = Field(alias="sessionId")
    restored: bool


# --- request bodies -------------------------------------------------------------------------------


class CreateSessionBody(_Wire):
    agent_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)] = Field(alias="agentId")
    input: dict[str, Any] | None = None


class RestoreSessionBody(_Wire):
    messages: Annotated[list[UIMessage], Field(max_length=10_000)]
    input: dict[str, Any] | None = None


# --- bus: gateway → runtime (request/reply in the runtime queue group) ---------------------------


class OctavusCreateRequest(BaseModel):
    principal: Principal
    body: CreateSessionBody


class OctavusGetRequest(BaseModel):
    principal: Principal
    session_id: Annotated[str, Field(max_length=MAX_ID)]
    format: Literal["internal", "ui"] = "internal"


class OctavusRestoreRequest(BaseModel):
    principal: Principal
    session_id: Annotated[str, Field(max_length=MAX_ID)]
    body: RestoreSessionBody


class OctavusTriggerRequest(BaseModel):
    """Start (or continue) an execution. On `ok`, the worker publishes `StreamFrame`s to `stream`
    (a subject the gateway subscribed to before asking) until one with `done`."""

    principal: Principal
    session_id: Annotated[str, Field(max_length=MAX_ID)]
    body: TriggerBody
    stream: Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class OctavusReply(BaseModel):
    """Reply to every request above: the HTTP status and JSON body to answer with (the body as
    JSON text, so optional keys stay absent and user values stay exactly as they were)."""

    ok: bool
    status: int = 200
    body: str | None = None
    error: ErrorEnvelope | None = None


class StreamFrame(BaseModel):
    """One stream event (`event`, a JSON object as @octavus/core parses it) or the end (`done`).
    `seq` counts from 0, so the gateway notices a lost frame."""

    seq: int
    event: dict[str, Any] | None = None
    done: bool = False
