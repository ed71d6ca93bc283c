"""Conversation events as the runtimes publish them, and what the catalog stored of them: the
shared vocabulary of test_conversations.py (history over HTTP) and test_conversation_consumer.py
(the JetStream consumer)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import text

from parley_catalog.context import CatalogContext
from parley_common import subjects
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationEndReason,
    ConversationMessage,
    ConversationStarted,
    MessageRole,
)

from .support import User

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def publish(js: JetStreamContext, conversation_id: uuid.UUID, event: BaseModel | bytes) -> None:
    data = event if isinstance(event, bytes) else event.model_dump_json().encode()
    await js.publish(subjects.conversation_event(str(conversation_id)), data)


def started(conversation_id: uuid.UUID, agent_id: str, at: datetime = T0) -> ConversationStarted:
    return ConversationStarted(
        event_id=uuid.uuid4(),
        conversation_id=conversation_id,
        at=at,
        agent_id=uuid.UUID(agent_id),
        channel="chat",
    )


def message(
    conversation_id: uuid.UUID, seq: int, content: str, role: MessageRole = MessageRole.USER
) -> ConversationMessage:
    return ConversationMessage(
        event_id=uuid.uuid4(),
        conversation_id=conversation_id,
        at=T0 + timedelta(seconds=seq),
        message_id=uuid.uuid4(),
        role=role,
        content=content,
        seq=seq,
    )


def ended(
    conversation_id: uuid.UUID, reason: ConversationEndReason = ConversationEndReason.FLOW_END
) -> ConversationEnded:
    return ConversationEnded(
        event_id=uuid.uuid4(),
        conversation_id=conversation_id,
        at=T0 + timedelta(minutes=5),
        end_reason=reason,
        summary="done",
    )


async def counts(ctx: CatalogContext, conversation_id: uuid.UUID) -> tuple[int, int]:
    """(conversation rows, message rows) stored for a conversation."""
    async with ctx.db.engine.connect() as conn:
        convs = await conn.scalar(
            text("SELECT count(*) FROM catalog.conversations WHERE id = :c"), {"c": conversation_id}
        )
        msgs = await conn.scalar(
            text("SELECT count(*) FROM catalog.messages WHERE conversation_id = :c"), {"c": conversation_id}
        )
    return int(convs or 0), int(msgs or 0)


async def all_messages(user: User, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
    resp = await user.catalog.get(f"/conversations/{conversation_id}/messages", params={"limit": 100})
    return list(resp.json()["items"]) if resp.status_code == 200 else []


async def drained(js: JetStreamContext, durable: str = "catalog-conversations") -> bool:
    """Every message so far was delivered to the durable consumer and acked or terminated."""
    info = await js.consumer_info(subjects.CONVERSATIONS_STREAM, durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def has(user: User, conversation_id: uuid.UUID) -> bool:
    return (await user.catalog.get(f"/conversations/{conversation_id}")).status_code == 200
