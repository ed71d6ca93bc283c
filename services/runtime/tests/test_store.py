"""Session state in Redis: fenced by owner, bounded in size, with a TTL; and the Octavus sessions'
store on the same base (`state_store.RedisStateStore`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationEndReason,
    ConversationEventBatch,
    ConversationStarted,
    MessageRole,
    conversation_body,
)
from parley_common.errors import ParleyError
from parley_common.session_contract import (
    ServerError,
    ServerSessionClosed,
    ServerTextDelta,
    ServerTurnComplete,
    SessionOutput,
    SessionStart,
    SessionTiming,
)
from parley_runtime.octavus.state import Session
from parley_runtime.octavus.store import SessionStore
from parley_runtime.sessions.state import HistoryItem, SessionState
from parley_runtime.sessions.store import OwnershipLost, StateStore, StateTooLarge


def new_state() -> SessionState:
    principal = Principal(kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=uuid.uuid4())
    return SessionState.new(
        SessionStart(
            conversation_id=uuid.uuid4(),
            agent_id="a",
            principal=principal,
            started_at=datetime.now(UTC),
            connection_id="c",
        )
    )


@pytest.fixture
async def redis(infra: Any) -> Any:
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


async def test_only_the_current_owner_writes(redis: Redis) -> None:
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000)
    state = new_state()
    await store.claim(state.conversation_id, "worker-a")
    state.variables["x"] = 1
    await store.save(state, "worker-a")
    # JetStream handed the session to worker b: a's late write must not clobber b's state.
    await store.claim(state.conversation_id, "worker-b")
    state.variables["x"] = 2
    with pytest.raises(OwnershipLost):
        await store.save(state, "worker-a")
    loaded = await store.load(state.conversation_id)
    assert loaded is not None and loaded.variables["x"] == 1
    await store.save(state, "worker-b")
    loaded = await store.load(state.conversation_id)
    assert loaded is not None and loaded.variables["x"] == 2
    ttl = await redis.ttl(f"parley:rt:session:{state.conversation_id}:state")
    assert 90 <= ttl <= 100
    state.phase = "closed"
    await store.save(state, "worker-b")
    assert await redis.ttl(f"parley:rt:session:{state.conversation_id}:state") <= 10


async def test_state_is_bounded_by_dropping_the_oldest_history(redis: Redis) -> None:
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=8_000)
    state = new_state()
    await store.claim(state.conversation_id, "w")
    for i in range(100):
        state.remember("user", f"message {i} " + "x" * 100, limit=1000)
    await store.save(state, "w")
    raw = await redis.get(f"parley:rt:session:{state.conversation_id}:state")
    items = await redis.lrange(f"parley:rt:session:{state.conversation_id}:history", 0, -1)
    assert raw is not None and len(raw) + sum(len(item) for item in items) <= 8_000
    loaded = await store.load(state.conversation_id)
    assert loaded is not None and 0 < len(loaded.history) < 100
    assert loaded.history[-1].content.startswith("message 99 ")  # the newest are kept

    state.variables["blob"] = "y" * 10_000  # not history: cannot be trimmed away
    with pytest.raises(StateTooLarge):
        await store.save(state, "w")


async def test_the_lease_belongs_to_the_owner_and_claims_are_counted(redis: Redis) -> None:
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000, lease_ms=2000)
    conv = new_state().conversation_id
    assert await store.lease_holder(conv) is None
    assert (await store.claim(conv, "worker-a")).claims == 1
    assert await store.lease_holder(conv) == "worker-a"
    # Another worker's heartbeat or release never touches a lease it does not hold.
    await store.renew_leases([store.lease_key(conv)], "worker-b")
    await store.release(conv, "worker-b")
    assert await store.lease_holder(conv) == "worker-a"
    await store.renew_leases([store.lease_key(conv)], "worker-a")
    assert 1000 < await redis.pttl(f"parley:rt:session:{conv}:lease") <= 2000
    # Handed over: the lease goes, the next claimant takes it and is counted.
    await store.release(conv, "worker-a")
    assert await store.lease_holder(conv) is None
    assert (await store.claim(conv, "worker-b")).claims == 2
    assert await store.lease_holder(conv) == "worker-b"


async def test_a_claim_reads_the_committed_state_in_the_same_round_trip(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking a session over and reading what its last owner committed is one command (one
    script), the state read once the fence names the new owner. It goes over the store's own
    connection (`RedisLine`), as the save does: the pool is not used."""
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000, lease_ms=2000)
    state = new_state()
    conv = state.conversation_id
    commands: list[object] = []
    execute: Any = store._line.execute

    async def counted(*args: Any) -> Any:
        commands.append(args[0])
        return await execute(*args)

    monkeypatch.setattr(store._line, "execute", counted)
    first = await store.claim(conv, "worker-a")
    assert (first.claims, first.state) == (1, None)
    assert len(commands) == 1
    pool: Any = redis.connection_pool
    assert not pool._available_connections and not pool._in_use_connections
    state.variables["x"] = 1
    await store.save(state, "worker-a")
    commands.clear()
    taken = await store.claim(conv, "worker-b")
    assert len(commands) == 1
    assert taken.claims == 2 and taken.state is not None and taken.state.variables["x"] == 1
    assert await store.owner(conv) == "worker-b" and await store.lease_holder(conv) == "worker-b"
    assert 1000 < await redis.pttl(f"parley:rt:session:{conv}:lease") <= 2000
    assert 90 <= await redis.ttl(f"parley:rt:session:{conv}:owner") <= 100
    assert 90 <= await redis.ttl(f"parley:rt:session:{conv}:claims") <= 100
    with pytest.raises(OwnershipLost):
        await store.save(state, "worker-a")


async def test_a_lease_that_lapsed_while_redis_was_away_is_renewed_by_its_holder(redis: Redis) -> None:
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000, lease_ms=2000)
    conv = new_state().conversation_id
    await store.claim(conv, "worker-a")
    await redis.delete(f"parley:rt:session:{conv}:lease")  # as if it expired during an outage
    await store.renew_leases([store.lease_key(conv)], "worker-a")
    assert await store.lease_holder(conv) == "worker-a"


async def test_an_octavus_session_is_kept_with_its_tombstone_and_bounded(redis: Redis) -> None:
    store = SessionStore(redis, ttl_s=100, tombstone_ttl_s=50, max_bytes=2_000)
    session = Session(id=str(uuid.uuid4()), agent_id="a1", created_at="t0", updated_at="t0")
    assert await store.create(session)
    assert not await store.create(session)  # the id is taken
    session.variables["x"] = 1
    await store.save(session)
    loaded = await store.load(session.id)
    assert loaded is not None and loaded.variables == {"x": 1}
    assert 90 <= await redis.ttl(f"parley:octavus:state:{session.id}") <= 100
    assert 140 <= await redis.ttl(f"parley:octavus:tomb:{session.id}") <= 150
    await redis.delete(f"parley:octavus:state:{session.id}")  # expired
    assert await store.load(session.id) is None
    tomb = await store.tombstone(session.id)
    assert tomb is not None and tomb.agent_id == "a1" and tomb.created_at == "t0"

    session.variables["blob"] = "y" * 3_000  # an Octavus state is never trimmed: refused
    with pytest.raises(ParleyError) as err:
        await store.save(session)
    assert err.value.code.code == "octavus.session_too_large"


def test_a_turns_working_copy_leaves_the_committed_state_as_it_was() -> None:
    """What a turn does to its copy (`SessionState.working_copy`) never reaches the state it was
    made from: the history, the variables (nested values too), the outbox, the tail, the fields."""
    state = new_state()
    state.remember("user", "hi", 10)
    state.variables["profile"] = {"tags": ["a"], "address": {"city": "Oslo"}}
    state.variables["items"] = [1, 2]
    state.message(MessageRole.USER, "hi", datetime.now(UTC))
    before = state.model_dump_json()

    work = state.working_copy()
    assert work.model_dump(exclude={"outbox", "tail"}) == state.model_dump(exclude={"outbox", "tail"})
    assert work.outbox == [] and work.tail == []
    work.remember("assistant", "hello", 1)  # drops the oldest too
    work.variables["profile"]["tags"].append("b")
    work.variables["profile"]["address"]["city"] = "Bergen"
    work.variables["items"].append(3)
    work.variables["new"] = "x"
    work.message(MessageRole.ASSISTANT, "hello", datetime.now(UTC))
    work.phase, work.node_turns, work.turn_no = "closed", 5, 9
    assert state.model_dump_json() == before


def test_a_state_keeps_no_record_of_the_fields_assigned() -> None:
    """pydantic's record of the fields given or assigned (a set per object, ~2.2 KiB once a turn
    had assigned 19) is never kept by a session's state, made, copied, assigned or loaded; what
    is assigned is saved and read back all the same."""
    state = new_state()
    assert state.model_fields_set == set()
    work = state.working_copy()
    for name in SessionState.model_fields:
        setattr(work, name, getattr(work, name))
    work.turn_no, work.phase, work.node_id = 3, "waiting", "n1"
    assert work.model_fields_set <= {"history", "variables", "outbox", "tail"}  # the copy's update
    assert state.model_fields_set == set()
    loaded = SessionState.model_validate_json(work.model_dump_json())
    assert loaded.model_fields_set == set()
    assert (loaded.turn_no, loaded.phase, loaded.node_id) == (3, "waiting", "n1")
    assert loaded.model_dump() == work.model_dump()
    work._saved_seq = 7  # private attributes are pydantic's as before
    assert work._saved_seq == 7


def _key(state: SessionState, part: str) -> str:
    return f"parley:rt:session:{state.conversation_id}:{part}"


async def test_a_save_sends_the_history_the_turn_appended_not_the_whole_history(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is a list of its own: a turn's save sends what the turn appended and trims
    what it dropped, so it stays the size of the turn however long the conversation is; what is
    read back is the history as the turn left it."""
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=1_000_000)
    sent: list[int] = []
    execute: Any = store._line.execute

    async def measured(*args: Any) -> Any:
        sent.append(sum(len(a) for a in args if isinstance(a, bytes | str)))
        return await execute(*args)

    monkeypatch.setattr(store._line, "execute", measured)
    state = new_state()
    claimed = await store.claim(state.conversation_id, "w")
    assert claimed.state is None
    for turn in range(60):
        work = state.working_copy()
        work.remember("user", f"question {turn} " + "q" * 2_000, limit=50)
        work.remember("assistant", f"answer {turn} " + "a" * 2_000, limit=50)
        await store.save(work, "w")
        state = work
    assert max(sent[-10:]) < 6_000 < 50 * 2_000  # two items a save, not the fifty kept
    loaded = await store.load(state.conversation_id)
    assert loaded is not None
    assert [(i.role, i.content) for i in loaded.history] == [(i.role, i.content) for i in state.history]
    assert len(loaded.history) == 50 and loaded.history[0].content.startswith("question 35 ")
    assert b'"history":' not in cast(bytes, await redis.get(_key(state, "state")))
    assert 90 <= await redis.ttl(_key(state, "history")) <= 100
    taken = await store.claim(state.conversation_id, "v")  # a new owner reads the same history
    assert taken.state is not None and taken.state.model_dump() == loaded.model_dump()

    state.history.clear()  # what a session closed with a state too large keeps
    state.phase = "closed"
    await store.save(state, "v")
    assert not await redis.exists(_key(state, "history"))
    loaded = await store.load(state.conversation_id)
    assert loaded is not None and loaded.history == []


async def test_a_save_repeated_after_redis_applied_it_appends_nothing_twice(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save is retried when its connection breaks, also after Redis applied it (the reply was
    lost): the count of items ever appended tells the script the items are there already."""
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000)
    state = new_state()
    await store.claim(state.conversation_id, "w")
    state.remember("user", "hello", limit=10)
    await store.save(state, "w")
    work = state.working_copy()
    work.remember("assistant", "hi there", limit=10)
    execute: Any = store._line.execute

    async def applied_then_broken(*args: Any) -> Any:
        await execute(*args)
        return await execute(*args)  # the retry, after the first reply was lost

    monkeypatch.setattr(store._line, "execute", applied_then_broken)
    await store.save(work, "w")
    monkeypatch.setattr(store._line, "execute", execute)
    items = await redis.lrange(_key(state, "history"), 0, -1)
    assert [HistoryItem.model_validate_json(i).content for i in items] == ["hello", "hi there"]


async def test_a_history_redis_no_longer_holds_is_saved_whole(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state saved before the history had a list of its own is read with the history inside it
    and saved whole the next time; so is one whose list is gone or behind: the save is refused
    without writing anything, and made again with every item."""
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000)
    state = new_state()
    await store.claim(state.conversation_id, "w")
    state.history = [
        HistoryItem(role="user", content="before"),
        HistoryItem(role="assistant", content="split"),
    ]
    await redis.set(_key(state, "state"), state.model_dump_json())  # with the history inside
    old = await store.claim(state.conversation_id, "w")
    assert old.state is not None and [i.content for i in old.state.history] == ["before", "split"]
    work = old.state.working_copy()
    work.remember("user", "after", limit=10)
    await store.save(work, "w")
    loaded = await store.load(state.conversation_id)
    assert loaded is not None and [i.content for i in loaded.history] == ["before", "split", "after"]

    await redis.delete(_key(state, "history"))  # gone (evicted, say)
    loaded.history_seq += 2_500  # and thousands of messages appended, more than one command takes
    loaded.history += [HistoryItem(role="user", content=str(i)) for i in range(2_500)]
    work = loaded.working_copy()
    work.remember("assistant", "again", limit=10_000)
    scripts: list[Any] = []
    execute: Any = store._line.execute

    async def counted(*args: Any) -> Any:
        scripts.append(await execute(*args))
        return scripts[-1]

    monkeypatch.setattr(store._line, "execute", counted)
    await store.save(work, "w")
    assert scripts == [-1, 1]
    loaded = await store.load(state.conversation_id)
    assert loaded is not None
    assert [i.content for i in loaded.history] == [
        *("before", "split", "after"),
        *(str(i) for i in range(2_500)),
        "again",
    ]


async def test_a_save_that_lost_the_session_writes_no_history(redis: Redis) -> None:
    store = StateStore(redis, ttl_s=100, closed_ttl_s=10, max_bytes=100_000)
    state = new_state()
    await store.claim(state.conversation_id, "a")
    await store.claim(state.conversation_id, "b")
    state.remember("user", "late", limit=10)
    with pytest.raises(OwnershipLost):
        await store.save(state, "a")
    assert not await redis.exists(_key(state, "history"), _key(state, "history_seq"), _key(state, "state"))


def test_a_commit_writes_the_state_as_pydantic_does_and_each_event_once() -> None:
    """The state's JSON is pydantic's own (`model_dump_json` without the history), its outbox and
    tail spliced in from `events_json`; the commit's publications reuse those bytes (the same
    objects while the events are the same), and are made again once the events change."""
    state = new_state()
    conv, now = state.conversation_id, datetime.now(UTC)
    state.outbox.append(
        ConversationStarted(
            event_id=uuid.uuid4(), conversation_id=conv, at=now, agent_id=uuid.uuid4(), channel="web"
        )
    )
    state.message(MessageRole.USER, 'héllo "quoted" \\ \n ✓', now)
    state.message(MessageRole.ASSISTANT, "hi", now)
    state.outbox.append(
        ConversationEnded(
            event_id=uuid.uuid4(), conversation_id=conv, at=now, end_reason=ConversationEndReason.TIMEOUT
        )
    )
    timing = SessionTiming(started_at=now, deadline_at=now)
    state.tail = [
        SessionOutput(index=4, event=ServerTextDelta(chunk="x\u2028y")),
        SessionOutput(index=5, event=ServerError(code="c", message="m")),
        SessionOutput(index=6, event=ServerTurnComplete(), timing=timing),
        SessionOutput(index=7, event=ServerSessionClosed(reason=ConversationEndReason.TIMEOUT)),
    ]
    assert state.encoded() == state.model_dump_json(exclude={"history"}).encode()
    outbox, tail = state.events_json()
    assert tail == [out.model_dump_json().encode() for out in state.tail]
    batch = ConversationEventBatch(events=list(state.outbox)).model_dump_json().encode()
    assert conversation_body(state.outbox, outbox) == conversation_body(state.outbox) == batch
    again_outbox, again_tail = state.events_json()
    assert all(a is b for a, b in zip([*again_outbox, *again_tail], [*outbox, *tail], strict=True))
    state.message(MessageRole.USER, "more", now)
    assert len(state.events_json()[0]) == 5
    assert state.encoded() == state.model_dump_json(exclude={"history"}).encode()
    state.published()
    assert state.__pydantic_private__ is not None
    assert state.__pydantic_private__["_events_json"] is None  # a held session keeps none of it
    assert state.encoded() == state.model_dump_json(exclude={"history"}).encode()
