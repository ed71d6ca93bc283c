"""Conversation history tables, written only by the event consumer.

Events can arrive in any order (a message before its `started`, an `ended` before the last
message), so nothing here has a foreign key: a conversation row created by an early `ended` has no
`agent_id` until its `started` arrives, and is invisible to the API until then.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, CheckConstraint, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from parley_catalog.db import Base
from parley_catalog.timeutil import utcnow


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'ended')", name="status"),
        Index(
            "ix_conversations_agent_started",
            "agent_id",
            text("started_at DESC"),
            text("id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    agent_id: Mapped[UUID | None]
    status: Mapped[str] = mapped_column(default="active")
    channel: Mapped[str | None]
    user_id: Mapped[UUID | None]
    summary: Mapped[str | None]
    end_reason: Mapped[str | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant', 'system', 'tool')", name="role"),
        Index("ix_messages_conversation_seq", "conversation_id", "seq", "id"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True)
    conversation_id: Mapped[UUID]
    seq: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str]
    content: Mapped[str]
    created_at: Mapped[datetime]


class ProcessedEvent(Base):
    """One row per applied event: a replayed event finds its id here and changes nothing."""

    __tablename__ = "processed_events"

    event_id: Mapped[UUID] = mapped_column(primary_key=True)
    type: Mapped[str]
    conversation_id: Mapped[UUID]
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)
