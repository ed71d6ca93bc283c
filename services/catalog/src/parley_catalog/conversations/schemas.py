"""HTTP schemas of the history endpoints (Kivox spec `Conversation`, `ConversationMessage`, pages)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from parley_common.conversation_contract import ConversationEndReason, ConversationMessageRole

NEXT_CURSOR = "Pass as `after` to get the next page; empty when `has_more` is false."


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class Conversation(BaseModel):
    id: UUID
    agent_id: UUID
    status: ConversationStatus
    summary: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    end_reason: ConversationEndReason | None = None


class ConversationMessage(BaseModel):
    id: UUID
    conversation_id: UUID
    role: ConversationMessageRole
    content: str
    created_at: datetime


class ConversationPage(BaseModel):
    items: list[Conversation]
    next_cursor: str = Field(description=NEXT_CURSOR)
    has_more: bool


class ConversationMessagePage(BaseModel):
    items: list[ConversationMessage]
    next_cursor: str = Field(description=NEXT_CURSOR)
    has_more: bool
