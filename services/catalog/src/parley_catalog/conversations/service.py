"""Conversation history: applying runtime events (idempotently) and reading pages back.

Events are applied in one transaction together with the insert of their `event_id`s into
`processed_events`; a replayed event hits that primary key and changes nothing. Messages are also
keyed by their own `message_id`, so even a re-sent message under a new event id is stored once.
A batch of events costs a few statements (one multi-row insert of the ids, one of the messages,
one upsert of the conversations started, one of those ended), not a transaction per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, cast
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Table, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog import cursor
from parley_catalog.conversations import schemas
from parley_catalog.conversations.models import Conversation, Message, ProcessedEvent
from parley_catalog.timeutil import utcnow
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationMessage,
    ConversationStarted,
)

AnyEvent = ConversationStarted | ConversationMessage | ConversationEnded


class ConversationKey(BaseModel):
    """Sort key of the conversations list (newest first), for its cursor."""

    started_at: AwareDatetime
    id: UUID


class MessageKey(BaseModel):
    """Sort key of the messages list (conversation order), for its cursor."""

    seq: Annotated[int, Field(ge=0, lt=2**63)]
    id: UUID


# Built once and executed with a list of rows (SQLAlchemy's "insertmanyvalues": one statement per
# batch, compiled once, where `.values([...])` compiled anew for every batch size). The
# conversations' upserts too: an ORM `insert(Conversation).values(...)` built per event cost the
# catalog more CPU than anything else when sessions open (its ORM bulk path, its cache key).
_PROCESSED = cast(Table, ProcessedEvent.__table__)
_MESSAGES = cast(Table, Message.__table__)
_CONVERSATIONS = cast(Table, Conversation.__table__)
_CLAIM = (
    insert(_PROCESSED)
    .on_conflict_do_nothing(index_elements=[_PROCESSED.c.event_id])
    .returning(_PROCESSED.c.event_id)
)
_INSERT_MESSAGES = insert(_MESSAGES).on_conflict_do_nothing(index_elements=[_MESSAGES.c.id])


def _upsert(overwrite: Iterable[str], fill: Iterable[str] = ()) -> Insert:
    """Insert a conversation row, or update the existing one: the columns `overwrite` take the new
    values, the columns `fill` a new value that is not null, and `updated_at` is set."""
    stmt = insert(_CONVERSATIONS)
    set_: dict[str, Any] = {name: stmt.excluded[name] for name in [*overwrite, "updated_at"]}
    set_.update({name: func.coalesce(stmt.excluded[name], _CONVERSATIONS.c[name]) for name in fill})
    return stmt.on_conflict_do_update(index_elements=[_CONVERSATIONS.c.id], set_=set_)


# An `ended` may have arrived first and left a row without agent: `started` fills it in and keeps
# its status.
_UPSERT_STARTED = _upsert(["agent_id", "channel", "user_id", "started_at"])
_UPSERT_ENDED = _upsert(["status", "end_reason", "ended_at"], fill=["summary"])


async def apply_events(db: AsyncSession, events: Sequence[AnyEvent]) -> list[bool]:
    """Persist events; for each, False when it was already applied (before, or earlier in
    `events`). The caller commits.

    Nothing has a foreign key (models.py), and a `started` and an `ended` of one conversation
    set different columns, so the messages, the `started`s and the `ended`s are each stored with
    one statement over their rows; two events of one kind for one conversation are applied in
    their order (`_upsert_all`)."""
    if not events:
        return []
    rows = [{"event_id": e.event_id, "type": e.type, "conversation_id": e.conversation_id} for e in events]
    claimed = set((await db.execute(_CLAIM, rows)).scalars())
    applied: list[bool] = []
    messages: list[dict[str, Any]] = []
    started: list[dict[str, Any]] = []
    ended: list[dict[str, Any]] = []
    now = utcnow()
    for event in events:
        first = event.event_id in claimed
        claimed.discard(event.event_id)  # the same event twice in one batch is applied once
        applied.append(first)
        if not first:
            continue
        if isinstance(event, ConversationMessage):
            messages.append(
                {
                    "id": event.message_id,
                    "conversation_id": event.conversation_id,
                    "seq": event.seq,
                    "role": event.role.value,
                    "content": event.content,
                    "created_at": event.at,
                }
            )
        elif isinstance(event, ConversationStarted):
            started.append(
                {
                    "id": event.conversation_id,
                    "agent_id": event.agent_id,
                    "channel": event.channel,
                    "user_id": event.user_id,
                    "started_at": event.at,
                    "status": "active",
                    "updated_at": now,
                }
            )
        else:
            ended.append(
                {
                    "id": event.conversation_id,
                    "status": "ended",
                    "end_reason": event.end_reason.value,
                    "ended_at": event.at,
                    "summary": event.summary,
                    "updated_at": now,
                }
            )
    if messages:
        await db.execute(_INSERT_MESSAGES, messages)
    await _upsert_all(db, _UPSERT_STARTED, started)
    await _upsert_all(db, _UPSERT_ENDED, ended)
    return applied


async def _upsert_all(db: AsyncSession, stmt: Insert, rows: list[dict[str, Any]]) -> None:
    """`stmt` over `rows` in their order. Without RETURNING, SQLAlchemy hands the rows to asyncpg's
    executemany (the prepared statement once per row, in order); were they ever folded into one
    multi-row INSERT, PostgreSQL would refuse to update a row twice in it, so a conversation seen
    again starts a new execution after the rows before it."""
    group: list[dict[str, Any]] = []
    ids: set[UUID] = set()
    for row in rows:
        if row["id"] in ids:
            await db.execute(stmt, group)
            group, ids = [], set()
        group.append(row)
        ids.add(row["id"])
    if group:
        await db.execute(stmt, group)


def to_schema(row: Conversation) -> schemas.Conversation:
    assert row.agent_id is not None and row.started_at is not None
    return schemas.Conversation.model_validate(row, from_attributes=True)


async def visible_conversation(db: AsyncSession, conversation_id: UUID) -> Conversation | None:
    """A conversation the API shows: started (has its agent) and not deleted."""
    return await db.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id,
            Conversation.deleted_at.is_(None),
            Conversation.agent_id.is_not(None),
            Conversation.started_at.is_not(None),
        )
    )


async def list_conversations(
    db: AsyncSession, agent_id: UUID, page: cursor.CursorQuery
) -> schemas.ConversationPage:
    query = select(Conversation).where(
        Conversation.agent_id == agent_id,
        Conversation.deleted_at.is_(None),
        Conversation.started_at.is_not(None),
    )
    if page.after:
        key = cursor.decode(page.after, ConversationKey)
        query = query.where(tuple_(Conversation.started_at, Conversation.id) < tuple_(key.started_at, key.id))
    query = query.order_by(Conversation.started_at.desc(), Conversation.id.desc())
    rows, next_cursor = await cursor.page(db, query, page.limit, _conversation_key)
    return schemas.ConversationPage(
        items=[to_schema(r) for r in rows], next_cursor=next_cursor or "", has_more=next_cursor is not None
    )


def _conversation_key(row: Conversation) -> ConversationKey:
    assert row.started_at is not None  # the list holds started conversations only
    return ConversationKey(started_at=row.started_at, id=row.id)


async def list_messages(
    db: AsyncSession, conversation_id: UUID, page: cursor.CursorQuery
) -> schemas.ConversationMessagePage:
    query = select(Message).where(Message.conversation_id == conversation_id)
    if page.after:
        key = cursor.decode(page.after, MessageKey)
        query = query.where(tuple_(Message.seq, Message.id) > tuple_(key.seq, key.id))
    rows, next_cursor = await cursor.page(
        db, query.order_by(Message.seq, Message.id), page.limit, lambda m: MessageKey(seq=m.seq, id=m.id)
    )
    items = [schemas.ConversationMessage.model_validate(r, from_attributes=True) for r in rows]
    return schemas.ConversationMessagePage(
        items=items, next_cursor=next_cursor or "", has_more=next_cursor is not None
    )


async def delete_conversation(db: AsyncSession, conversation: Conversation) -> None:
    conversation.deleted_at = utcnow()
    conversation.updated_at = utcnow()
    await db.flush()


async def prune_processed(db: AsyncSession, older_than: datetime) -> int:
    """Forget event ids older than anything the stream can still replay."""
    result = await db.execute(delete(ProcessedEvent).where(ProcessedEvent.processed_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)
