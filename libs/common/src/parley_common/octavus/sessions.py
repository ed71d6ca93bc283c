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
from pydantic.alias_generators import to_camel

from parley_common.auth_contract import Principal
from parley_common.errors import BusReply
from parley_common.octavus.events import TriggerBody

MAX_ID = 200


class _Wire(BaseModel):
    # Keys are the camelCase of the field names (`session_id` is `sessionId` on the wire).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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
    tool_call: ToolCallInfo | None = None
    source: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    object: dict[str, Any] | None = None  # {id, typeName, value}
    thread: str | None = None  # absent for the main thread


class ChatMessage(_Wire):
    id: str
    role: Literal["user", "assistant", "system"]
    parts: list[MessagePart]
    created_at: str
    visible: bool | None = None
    content: str
    tool_calls: list[ToolCallInfo] | None = None
    reasoning: str | None = None
    reasoning_signature: str | None = None


class SessionState(_Wire):
    """An active session, as `agentSessions.get()` parses it."""

    id: str
    agent_id: str
    input: dict[str, Any]
    variables: dict[str, Any]
    resources: dict[str, Any]
    messages: list[ChatMessage]
    status: Literal["active"] = "active"
    created_at: str
    updated_at: str


# --- UI messages (`?format=ui`, `restore`) --------------------------------------------------------

PartStatus = Literal["streaming", "done"]


class UITextPart(_Wire):
    type: Literal["text", "reasoning"]
    text: str
    status: PartStatus = "done"
    thread: str | None = None


class UIToolCallPart(_Wire):
    type: Literal["tool-call"]
    tool_call_id: Annotated[str, Field(max_length=MAX_ID)]
    tool_name: str
    display_name: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    # `cancelled` is what @octavus/client-sdk stores when a stream is stopped; it is accepted on
    # restore and served as `error` (core's zod schema would reject it).
    status: Literal["pending", "running", "done", "error", "cancelled"]
    thread: str | None = None


class UIOperationPart(_Wire):
    type: Literal["operation"]
    operation_id: str
    name: str
    operation_type: str
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
    created_at: str


class UISessionState(_Wire):
    session_id: str
    agent_id: str
    messages: list[UIMessage]
    status: Literal["active"] = "active"


class ExpiredSession(_Wire):
    """What both GETs return once a session's state has expired (restore brings it back)."""

    session_id: str
    agent_id: str
    status: Literal["expired"] = "expired"
    created_at: str


class SessionCreated(_Wire):
    session_id: str


class SessionRestored(_Wire):
    session_id: str
    restored: bool


# --- request bodies -------------------------------------------------------------------------------


class CreateSessionBody(_Wire):
    agent_id: Annotated[str, Field(min_length=1, max_length=MAX_ID)]
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


class OctavusReply(BusReply):
    """Reply to every request above: the HTTP status and JSON body to answer with (the body as
    JSON text, so optional keys stay absent and user values stay exactly as they were)."""

    status: int = 200
    body: str | None = None


class StreamFrame(BaseModel):
    """One stream event (`event`, a JSON object as @octavus/core parses it) or the end (`done`).
    `seq` counts from 0, so the gateway notices a lost frame."""

    seq: int
    event: dict[str, Any] | None = None
    done: bool = False
