"""Conversation history: persisted from JetStream events (idempotent under replays, tolerant of
disorder and garbage, no loss while the database is down) and served with cursor pagination."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import text

from parley_catalog.context import CatalogContext
from parley_catalog.conversations.consumer import ConversationConsumer
from parley_catalog.db import Database
from parley_common import subjects
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationEndReason,
    ConversationMessage,
    ConversationStarted,
    MessageRole,
)
from parley_devstack.servers import free_port

from .support import User, World, assert_error, eventually

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def alice(world: World) -> User:
    return await world.user()


@pytest.fixture
async def agent(alice: User) -> dict[str, Any]:
    return await alice.create_agent()


@pytest.fixture
async def js(ctx: CatalogContext) -> AsyncIterator[JetStreamContext]:
    nc: Client = await nats.connect(ctx.settings.nats_url)
    yield nc.jetstream()
    await nc.close()


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


async def test_persist_and_page_through_history(
    alice: User, agent: dict[str, Any], js: JetStreamContext
) -> None:
    conv = uuid.uuid4()
    await publish(js, conv, started(conv, agent["id"]))
    contents = [f"message {i}" for i in range(5)]
    for seq in (3, 0, 4, 1, 2):  # published out of order: served in `seq` order
        role = MessageRole.ASSISTANT if seq % 2 else MessageRole.USER
        await publish(js, conv, message(conv, seq, contents[seq], role))
    await publish(js, conv, ended(conv))

    async def whole() -> list[dict[str, Any]] | None:
        got = await all_messages(alice, conv)
        return got if len(got) == 5 else None

    assert [m["content"] for m in await eventually(whole)] == contents

    async def finished() -> dict[str, Any] | None:
        resp = await alice.catalog.get(f"/conversations/{conv}")
        return resp.json() if resp.status_code == 200 and resp.json()["status"] == "ended" else None

    conversation = await eventually(finished)
    assert conversation == {
        "id": str(conv),
        "agent_id": agent["id"],
        "status": "ended",
        "summary": "done",
        "started_at": "2026-01-01T12:00:00Z",
        "ended_at": "2026-01-01T12:05:00Z",
        "end_reason": "flow_end",
    }

    # Cursor pagination over messages: pages of 2, then 1, then the end.
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after is not None else {})
        body = (await alice.catalog.get(f"/conversations/{conv}/messages", params=params)).json()
        pages.append([m["content"] for m in body["items"]])
        if not body["has_more"]:
            assert body["next_cursor"] == ""
            break
        after = body["next_cursor"]
    assert pages == [contents[0:2], contents[2:4], contents[4:5]]
    first = (await alice.catalog.get(f"/conversations/{conv}/messages", params={"limit": 5})).json()
    assert first["has_more"] is False and first["next_cursor"] == "" and len(first["items"]) == 5
    assert set(first["items"][0]) == {"id", "conversation_id", "role", "content", "created_at"}


async def test_conversation_list_pagination(alice: User, agent: dict[str, Any], js: JetStreamContext) -> None:
    convs = [uuid.uuid4() for _ in range(5)]
    for i, conv in enumerate(convs):
        await publish(js, conv, started(conv, agent["id"], at=T0 + timedelta(minutes=i)))

    async def listed() -> list[str] | None:
        body = (await alice.catalog.get(f"/agents/{agent['id']}/conversations", params={"limit": 100})).json()
        return [c["id"] for c in body["items"]] if len(body["items"]) == 5 else None

    newest_first = [str(c) for c in reversed(convs)]
    assert await eventually(listed) == newest_first
    seen: list[str] = []
    after = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        body = (await alice.catalog.get(f"/agents/{agent['id']}/conversations", params=params)).json()
        seen += [c["id"] for c in body["items"]]
        after = body["next_cursor"]
        assert body["has_more"] is (len(seen) < 5)
    assert seen == newest_first and after == ""
    # A conversation arriving between pages does not shift the pages already handed out.
    first = (await alice.catalog.get(f"/agents/{agent['id']}/conversations", params={"limit": 2})).json()
    newer = uuid.uuid4()
    await publish(js, newer, started(newer, agent["id"], at=T0 + timedelta(hours=1)))
    await eventually(lambda: _has(alice, newer))
    rest = (
        await alice.catalog.get(
            f"/agents/{agent['id']}/conversations", params={"after": first["next_cursor"]}
        )
    ).json()
    assert [c["id"] for c in rest["items"]] == newest_first[2:]


async def _has(user: User, conversation_id: uuid.UUID) -> bool:
    return (await user.catalog.get(f"/conversations/{conversation_id}")).status_code == 200


async def test_invalid_cursors_and_limits(alice: User, agent: dict[str, Any]) -> None:
    path = f"/agents/{agent['id']}/conversations"
    for cursor in ("garbage", "e30", "eyJzdGFydGVkX2F0IjogMX0", "!!!", "W10"):
        assert_error(await alice.catalog.get(path, params={"after": cursor}), 400, "request.invalid_cursor")
    for limit in (0, 101, -5):
        assert_error(await alice.catalog.get(path, params={"limit": limit}), 422, "request.validation_failed")
    assert_error(await alice.catalog.get(path, params={"after": "x" * 513}), 422)


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


async def test_history_access_rules(world: World, js: JetStreamContext) -> None:
    owner, admin, member, outsider = [await world.user(t) for t in ("owner", "admin", "member", "outsider")]
    slug, _ = await world.org(owner, {"admin": admin, "member": member})
    agent = await owner.create_agent(f"/orgs/{slug}/agents")
    conv = uuid.uuid4()
    await publish(js, conv, started(conv, agent["id"]))
    await publish(js, conv, message(conv, 0, "hello"))
    await eventually(lambda: _has(member, conv))
    assert (await member.catalog.get(f"/conversations/{conv}/messages")).status_code == 200
    for path in (
        f"/conversations/{conv}",
        f"/conversations/{conv}/messages",
        f"/agents/{agent['id']}/conversations",
    ):
        assert_error(await outsider.catalog.get(path), 404, "resource.not_found")
    assert_error(await outsider.catalog.delete(f"/conversations/{conv}"), 404)
    assert_error(await member.catalog.delete(f"/conversations/{conv}"), 403, "auth.insufficient_role")
    history_only = await member.key_client(["conversations:read"])
    assert (await history_only.get(f"/conversations/{conv}")).status_code == 200
    assert_error(await history_only.delete(f"/conversations/{conv}"), 403, "auth.insufficient_scope")
    assert (await admin.catalog.delete(f"/conversations/{conv}")).status_code == 204
    for path in (f"/conversations/{conv}", f"/conversations/{conv}/messages"):
        assert_error(await owner.catalog.get(path), 404, "resource.not_found")
    assert (await owner.catalog.get(f"/agents/{agent['id']}/conversations")).json()["items"] == []
    assert_error(await admin.catalog.delete(f"/conversations/{conv}"), 404)
    # History of a deleted agent is gone with it.
    other = uuid.uuid4()
    await publish(js, other, started(other, agent["id"]))
    await eventually(lambda: _has(owner, other))
    await owner.catalog.delete(f"/agents/{agent['id']}")
    assert_error(await owner.catalog.get(f"/conversations/{other}"), 404)
    assert_error(await owner.catalog.get(f"/conversations/{uuid.uuid4()}"), 404)


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
