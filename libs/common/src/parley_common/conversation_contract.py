"""Conversation events: published by runtimes on the durable `CONVERSATIONS` stream and
persisted by the catalog. Every event has a unique `event_id`; persistence is idempotent on it,
so redelivery and replays never duplicate a message.

A message on the stream holds one event, or the events of one commit of a session's state
(`ConversationEventBatch`: usually the user's message and the agent's answer), published together
under a `Nats-Msg-Id` derived from their ids (`conversation_msg_id`), so a republication after a
crash is the same message."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field


class ConversationEndReason(StrEnum):
    USER_EXIT = "user_exit"
    TIMEOUT = "timeout"
    SCRIPT_TERMINATE = "script_terminate"
    SOCKET_SHUTDOWN = "socket_shutdown"
    ERROR = "error"
    FLOW_END = "flow_end"
    CLIENT_END = "client_end"
    AGENT_TRANSFER = "agent_transfer"


class ConversationMessageRole(StrEnum):
    """The spec's name for it (`ConversationMessageRole`)."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


MessageRole = ConversationMessageRole


class _ConversationEvent(BaseModel):
    event_id: UUID
    conversation_id: UUID
    at: datetime


class ConversationStarted(_ConversationEvent):
    type: Literal["conversation.started"] = "conversation.started"
    agent_id: UUID
    channel: Annotated[str, Field(max_length=64)] | None = None
    user_id: UUID | None = None


class ConversationMessage(_ConversationEvent):
    type: Literal["conversation.message"] = "conversation.message"
    message_id: UUID
    role: MessageRole
    content: Annotated[str, Field(max_length=200_000)]
    seq: int = Field(ge=0, description="Order of the message within the conversation.")


class ConversationEnded(_ConversationEvent):
    type: Literal["conversation.ended"] = "conversation.ended"
    end_reason: ConversationEndReason
    summary: Annotated[str, Field(max_length=10_000)] | None = None


ConversationEvent = Annotated[
    ConversationStarted | ConversationMessage | ConversationEnded, Field(discriminator="type")
]


class ConversationEventBatch(BaseModel):
    """Events published as one message, in their order (the catalog applies them together and
    still drops each one it already has, by `event_id`)."""

    type: Literal["conversation.batch"] = "conversation.batch"
    events: Annotated[list[ConversationEvent], Field(min_length=1)]


# What one message on `conv.events.<conversation_id>` holds.
ConversationEventBody = Annotated[
    ConversationStarted | ConversationMessage | ConversationEnded | ConversationEventBatch,
    Field(discriminator="type"),
]


def conversation_body(
    events: Sequence[ConversationStarted | ConversationMessage | ConversationEnded],
    encoded: Sequence[bytes] | None = None,
) -> bytes:
    """The message body of `events` (one of them alone, several as a batch), from their JSON when
    it is made already (`encoded`). A batch is written as `ConversationEventBatch` writes itself
    (a test holds the two equal), without building and validating one (~5 µs a turn)."""
    parts = encoded if encoded is not None else [event.model_dump_json().encode() for event in events]
    if len(parts) == 1:
        return parts[0]
    return b"".join((_BATCH_HEAD, b",".join(parts), b"]}"))


_BATCH_HEAD = b'{"type":"conversation.batch","events":['


def conversation_msg_id(events: Sequence[_ConversationEvent]) -> str:
    """The `Nats-Msg-Id` of the message holding `events`: one event's own id, or a digest of the
    ids of several in their order (the same events published again are the same message)."""
    if len(events) == 1:
        return str(events[0].event_id)
    digest = hashlib.sha256("\n".join(str(e.event_id) for e in events).encode()).hexdigest()
    return f"batch-{digest[:40]}"
