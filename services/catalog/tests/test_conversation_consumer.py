"""The catalog's conversation consumer: idempotent under replays, tolerant of disorder and garbage,
no loss while the database is down, a fetch applied in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import text

from parley_catalog.context import CatalogContext
from parley_catalog.conversations.consumer import ConversationConsumer
from parley_catalog.conversations.service import AnyEvent
from parley_catalog.db import Database
from parley_common import subjects
from parley_common.conversation_contract import (
    ConversationEndReason,
    MessageRole,
    conversation_body,
    conversation_msg_id,
)
from parley_devstack.servers import free_port

from .conversation_events import (
    T0,
    all_messages,
    counts,
    drained,
    ended,
    message,
    publish,
    started,
)
from .support import User, assert_error, eventually


async def test_replays_never_duplicate(
    alice: User, agent: dict[str, Any], js: JetStreamContext, ctx: CatalogContext, catalog_app: FastAPI
) -> None:
    conv = uuid.uuid4()
    events: list[BaseModel] = [
        started(conv, agent["id"]),
        message(conv, 0, "hi"),
        message(conv, 1, "hello"),
        ended(conv),
    ]
    for event in events:
        await publish(js, conv, event)
    for event in events:  # the same events again (a runtime retrying its publishes)
        await publish(js, conv, event)
    resent = message(conv, 1, "hello")  # the same message under a new event id
    resent.message_id = events[2].message_id  # type: ignore[attr-defined]
    await publish(js, conv, resent)
    await eventually(lambda: drained(js))
    assert await counts(ctx, conv) == (1, 2)

    # Replay the whole stream: a fresh durable consumer starts from the first event ever published.
    consumer: ConversationConsumer = catalog_app.state.consumer
    await consumer.stop()
    await js.delete_consumer(subjects.CONVERSATIONS_STREAM, "catalog-conversations")
    await consumer.start(catalog_app.state.broker.connection)
    await eventually(lambda: drained(js), timeout=30)
    assert await counts(ctx, conv) == (1, 2)
    assert [m["content"] for m in await all_messages(alice, conv)] == ["hi", "hello"]


async def test_events_in_any_order(alice: User, agent: dict[str, Any], js: JetStreamContext) -> None:
    conv = uuid.uuid4()
    await publish(js, conv, ended(conv, ConversationEndReason.USER_EXIT))
    await publish(js, conv, message(conv, 1, "second"))
    await eventually(lambda: drained(js))
    # Not visible until its `started` arrives (it has no agent yet).
    assert_error(await alice.catalog.get(f"/conversations/{conv}"), 404)
    await publish(js, conv, message(conv, 0, "first"))
    await publish(js, conv, started(conv, agent["id"]))

    async def visible() -> dict[str, Any] | None:
        resp = await alice.catalog.get(f"/conversations/{conv}")
        return resp.json() if resp.status_code == 200 else None

    shown = await eventually(visible)
    assert (
        shown["status"] == "ended" and shown["end_reason"] == "user_exit"
    )  # the late `started` keeps it ended
    assert [m["content"] for m in await all_messages(alice, conv)] == ["first", "second"]


async def test_malformed_events_are_dropped_without_blocking(
    alice: User, agent: dict[str, Any], js: JetStreamContext, ctx: CatalogContext, catalog_app: FastAPI
) -> None:
    conv = uuid.uuid4()
    consumer: ConversationConsumer = catalog_app.state.consumer
    malformed, retried = consumer.malformed, consumer.retried
    good = message(conv, 0, "valid")
    garbage: list[bytes] = [
        b"not json",
        b"{}",
        b"[1, 2]",
        b'{"type": "conversation.unknown", "event_id": "x"}',
        message(conv, 1, "nul \u0000 inside").model_dump_json().encode(),
        message(conv, 2, "x").model_dump_json().replace('"seq":2', '"seq":99999999999999999999').encode(),
        message(conv, 3, "x").model_dump_json().replace('"role":"user"', '"role":"wizard"').encode(),
        b"\xff\xfe",
    ]
    await publish(js, conv, started(conv, agent["id"]))
    for payload in garbage:
        await publish(js, conv, payload)
    await publish(js, conv, good)
    await eventually(lambda: drained(js))
    assert consumer.malformed - malformed == len(garbage) and consumer.retried == retried  # none retried
    assert [m["content"] for m in await all_messages(alice, conv)] == ["valid"]
    assert await counts(ctx, conv) == (1, 1)


async def test_a_commits_events_in_one_message_are_each_stored_once(
    alice: User, agent: dict[str, Any], js: JetStreamContext, ctx: CatalogContext, catalog_app: FastAPI
) -> None:
    """The runtime publishes the events of one commit as one message (`conversation_body`): each
    is stored, each only once across messages (a batch published again, a batch holding an event
    already stored on its own), and one that cannot be stored leaves the others stored."""
    consumer: ConversationConsumer = catalog_app.state.consumer
    conv = uuid.uuid4()
    first: list[AnyEvent] = [started(conv, agent["id"]), message(conv, 0, "hi", MessageRole.ASSISTANT)]
    second: list[AnyEvent] = [message(conv, 1, "question"), message(conv, 2, "answer", MessageRole.ASSISTANT)]
    bad = message(conv, 3, "nul \u0000 inside")
    third: list[AnyEvent] = [bad, message(conv, 4, "after the bad one", MessageRole.ASSISTANT)]
    applied, duplicates, malformed = consumer.applied, consumer.duplicates, consumer.malformed
    await publish(js, conv, second[0])  # one of them on its own first
    for events in (first, second, first, third):  # `first` again: a runtime's republication
        await publish(js, conv, conversation_body(events))
    await eventually(lambda: drained(js))
    assert [m["content"] for m in await all_messages(alice, conv)] == [
        "hi", "question", "answer", "after the bad one",
    ]  # fmt: skip
    assert (consumer.applied - applied, consumer.duplicates - duplicates) == (5, 3)
    assert consumer.malformed - malformed == 1
    assert await counts(ctx, conv) == (1, 4)
    # Both forms, fetched together or alone, give the same: a fresh consumer replays them all.
    await consumer.stop()
    await js.delete_consumer(subjects.CONVERSATIONS_STREAM, "catalog-conversations")
    await consumer.start(catalog_app.state.broker.connection)
    await eventually(lambda: drained(js), timeout=30)
    assert await counts(ctx, conv) == (1, 4)
    assert conversation_msg_id(first) == conversation_msg_id(list(first))  # from the ids, in order
    assert conversation_msg_id(first) != conversation_msg_id(first[::-1])
    assert conversation_msg_id(first[:1]) == str(first[0].event_id)  # one event: its own id


async def test_database_outage_loses_nothing(
    alice: User, agent: dict[str, Any], js: JetStreamContext, catalog_app: FastAPI
) -> None:
    consumer: ConversationConsumer = catalog_app.state.consumer
    nc = catalog_app.state.broker.connection
    settings = catalog_app.state.ctx.settings
    await consumer.stop()
    # The same durable consumer, but its database is unreachable.
    down = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    broken = ConversationConsumer(settings, down)
    await broken.start(nc)
    conv = uuid.uuid4()
    try:
        await publish(js, conv, started(conv, agent["id"]))
        await publish(js, conv, message(conv, 0, "kept"))

        await eventually(lambda: _is(broken.retried >= 10), timeout=20)
        assert broken.dropped == 0 and broken.applied == 0  # retried, never given up on
    finally:
        await broken.stop()
        await down.dispose()
        await consumer.start(nc)
    assert [m["content"] for m in await eventually(lambda: all_messages(alice, conv))] == ["kept"]


async def _is(value: bool) -> bool:
    return value


async def test_old_event_ids_are_pruned(ctx: CatalogContext, catalog_app: FastAPI) -> None:
    consumer: ConversationConsumer = catalog_app.state.consumer
    assert consumer.retention_s == ctx.settings.catalog_conversations_max_age_days * 86400
    old, recent = uuid.uuid4(), uuid.uuid4()
    async with ctx.db.engine.begin() as conn:
        for event_id, age in ((old, timedelta(days=30)), (recent, timedelta(days=2))):
            await conn.execute(
                text(
                    "INSERT INTO catalog.processed_events (event_id, type, conversation_id, processed_at) "
                    "VALUES (:e, 'conversation.message', :c, :at)"
                ),
                {"e": event_id, "c": uuid.uuid4(), "at": datetime.now(UTC) - age},
            )
    assert await consumer.prune() >= 1
    async with ctx.db.engine.connect() as conn:
        left = set(
            (
                await conn.execute(
                    text("SELECT event_id FROM catalog.processed_events WHERE event_id IN (:a, :b)"),
                    {"a": old, "b": recent},
                )
            ).scalars()
        )
    assert left == {recent}


async def test_a_fetch_is_applied_in_one_transaction_and_split_when_it_fails(
    alice: User,
    agent: dict[str, Any],
    js: JetStreamContext,
    ctx: CatalogContext,
    catalog_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events waiting together are fetched and stored together (duplicates inside the batch once);
    a batch whose transaction fails is handled message by message, losing nothing."""
    from parley_catalog.conversations import consumer as consumer_module
    from parley_catalog.conversations import service

    consumer: ConversationConsumer = catalog_app.state.consumer
    nc = catalog_app.state.broker.connection
    batches: list[int] = []
    real_apply = service.apply_events

    async def counting(db: Any, events: Any) -> list[bool]:
        batches.append(len(events))
        return await real_apply(db, events)

    monkeypatch.setattr(consumer_module, "apply_events", counting)
    conv = uuid.uuid4()
    await consumer.stop()
    events: list[BaseModel] = [started(conv, agent["id"])]
    events += [
        message(conv, i, f"m{i}", MessageRole.USER if i % 2 else MessageRole.ASSISTANT) for i in range(20)
    ]
    for event in [*events, events[3], events[5]]:  # two publishes again, in the same fetch
        await publish(js, conv, event)
    applied, duplicates = consumer.applied, consumer.duplicates
    await consumer.start(nc)
    await eventually(lambda: drained(js))
    assert max(batches) > 1
    assert (consumer.applied - applied, consumer.duplicates - duplicates) == (21, 2)
    assert await counts(ctx, conv) == (1, 20)

    async def failing(db: Any, events: Any) -> list[bool]:
        if len(events) > 1:
            raise RuntimeError("this batch fails")
        return await real_apply(db, events)

    monkeypatch.setattr(consumer_module, "apply_events", failing)
    other = uuid.uuid4()
    await consumer.stop()
    for i in range(5):
        await publish(js, other, message(other, i, f"x{i}"))
    await consumer.start(nc)
    await eventually(lambda: drained(js))
    assert await counts(ctx, other) == (0, 5)


async def test_a_batch_of_many_conversations_is_stored_as_if_one_by_one(
    agent: dict[str, Any], ctx: CatalogContext
) -> None:
    """`apply_events` stores each kind of event with one statement over its rows: the result is
    that of applying them in order, for conversations opened together, a `started` after its
    `ended`, and two `started`s or `ended`s of one conversation (the later wins, a summary is
    kept when the later has none)."""
    from parley_catalog.conversations import service

    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    b_again = started(b, agent["id"], at=T0 + timedelta(seconds=1))
    b_again.channel = "voice"
    b_end_later = ended(b, ConversationEndReason.USER_EXIT)
    b_end_later.summary = None
    events: list[service.AnyEvent] = [
        ended(a, ConversationEndReason.USER_EXIT),
        started(b, agent["id"]),
        message(b, 0, "hello b", MessageRole.ASSISTANT),
        started(c, agent["id"]),
        message(c, 0, "hello c", MessageRole.ASSISTANT),
        started(a, agent["id"]),
        b_again,
        ended(b),
        b_end_later,
    ]
    events.append(events[4])  # a duplicate inside the batch
    async with ctx.db.sessions() as db:
        applied = await service.apply_events(db, events)
        await db.commit()
    assert applied == [True] * 9 + [False]
    async with ctx.db.engine.connect() as conn:
        rows = {
            r.id: r
            for r in await conn.execute(
                text(
                    "SELECT id, agent_id, status, channel, started_at, end_reason, summary "
                    "FROM catalog.conversations WHERE id IN (:a, :b, :c)"
                ),
                {"a": a, "b": b, "c": c},
            )
        }
    agent_id = uuid.UUID(agent["id"])
    assert (rows[a].agent_id, rows[a].status, rows[a].end_reason) == (agent_id, "ended", "user_exit")
    assert (rows[b].channel, rows[b].started_at, rows[b].status) == (
        "voice",
        T0 + timedelta(seconds=1),
        "ended",
    )
    assert (rows[b].end_reason, rows[b].summary) == ("user_exit", "done")
    assert (rows[c].agent_id, rows[c].status, rows[c].end_reason) == (agent_id, "active", None)
    assert [await counts(ctx, conv) for conv in (a, b, c)] == [(1, 0), (1, 1), (1, 1)]
