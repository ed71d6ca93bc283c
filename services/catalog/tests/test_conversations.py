"""Conversation history over HTTP: persisted from the runtimes' events and served with cursor
pagination, to those allowed to read it (the consumer itself: test_conversation_consumer.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from nats.js import JetStreamContext

from parley_common.conversation_contract import (
    MessageRole,
)

from .conversation_events import (
    T0,
    all_messages,
    ended,
    has,
    message,
    publish,
    started,
)
from .support import User, World, assert_error, eventually


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
    await eventually(lambda: has(alice, newer))
    rest = (
        await alice.catalog.get(
            f"/agents/{agent['id']}/conversations", params={"after": first["next_cursor"]}
        )
    ).json()
    assert [c["id"] for c in rest["items"]] == newest_first[2:]


async def test_invalid_cursors_and_limits(alice: User, agent: dict[str, Any]) -> None:
    path = f"/agents/{agent['id']}/conversations"
    for cursor in ("garbage", "e30", "eyJzdGFydGVkX2F0IjogMX0", "!!!", "W10"):
        assert_error(await alice.catalog.get(path, params={"after": cursor}), 400, "request.invalid_cursor")
    for limit in (0, 101, -5):
        assert_error(await alice.catalog.get(path, params={"limit": limit}), 422, "request.validation_failed")
    assert_error(await alice.catalog.get(path, params={"after": "x" * 513}), 422)


async def test_history_access_rules(world: World, js: JetStreamContext) -> None:
    owner, admin, member, outsider = [await world.user(t) for t in ("owner", "admin", "member", "outsider")]
    slug, _ = await world.org(owner, {"admin": admin, "member": member})
    agent = await owner.create_agent(f"/orgs/{slug}/agents")
    conv = uuid.uuid4()
    await publish(js, conv, started(conv, agent["id"]))
    await publish(js, conv, message(conv, 0, "hello"))
    await eventually(lambda: has(member, conv))
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
    await eventually(lambda: has(owner, other))
    await owner.catalog.delete(f"/agents/{agent['id']}")
    assert_error(await owner.catalog.get(f"/conversations/{other}"), 404)
    assert_error(await owner.catalog.get(f"/conversations/{uuid.uuid4()}"), 404)
