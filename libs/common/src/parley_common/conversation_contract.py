"""Conversation events: published by runtimes on the durable `CONVERSATIONS` stream and
persisted by the catalog. Every event has a unique `event_id`; persistence is idempotent on it,
so redelivery and replays never duplicate a message."""

from __future__ import annotations

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
