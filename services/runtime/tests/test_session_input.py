"""A session's input: heard as the stream republishes it, with no JetStream consumer of its own,
and no input missed for it (sent before the claim, heard late, dropped, sent while the connection was
away or by a stream leader that died). See sessions/inputs.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from structlog.testing import capture_logs

from parley_common import subjects
from parley_runtime import bus
from parley_runtime.sessions import inputs as streams
from parley_runtime.sessions import runner as runner_module
from parley_runtime.sessions.runner import SessionRunner

from .sessions_support import Conversation, FakeClaim, Stack, session_start, stack


@pytest.fixture
async def rt(nats_url: str, infra: Any) -> AsyncIterator[Stack]:
    async with stack(nats_url, infra.redis_url) as value:
        yield value


async def input_consumers(rt: Stack, conversation_id: UUID) -> int:
    subject = subjects.session_in(str(conversation_id))
    infos = await rt.nc.jetstream().consumers_info(subjects.SESSION_IN_STREAM)
    return sum(1 for info in infos if info.config.filter_subject == subject)


def texts(events: list[dict[str, Any]]) -> str:
    return "".join(e.get("chunk", "") for e in events if e["type"] == "text_delta")


OnMsg = Callable[[Msg], Awaitable[None]]


@pytest.fixture
def deaf_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    """Core NATS never tells the worker about input (as if it had been sent before the worker
    subscribed, or while its connection was away): only the stream can."""
    listen = bus.session_input

    async def deaf(nc: Any, conversation_id: UUID, on_msg: OnMsg, on_dropped: Callable[[], None]) -> Any:
        return await listen(nc, f"{conversation_id}-nothing", on_msg, on_dropped)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "session_input", deaf)


def dropping(monkeypatch: pytest.MonkeyPatch, first: int, *, told: bool = False) -> None:
    """The worker's subscription loses its `first` inputs (`told`: as a pending limit drops them,
    which it is told of)."""
    listen = bus.session_input
    lost = 0

    async def lossy(nc: Any, conversation_id: UUID, on_msg: OnMsg, on_dropped: Callable[[], None]) -> Any:
        async def maybe(msg: Msg) -> None:
            nonlocal lost
            if lost < first:
                lost += 1
                if told:
                    on_dropped()
                return
            await on_msg(msg)

        return await listen(nc, conversation_id, maybe, on_dropped)

    monkeypatch.setattr(bus, "session_input", lossy)


@contextlib.asynccontextmanager
async def greeted(rt: Stack) -> AsyncIterator[tuple[UUID, Conversation, SessionRunner]]:
    """A brand-new session run to its greeting; ended, and its runner awaited, on the way out."""
    start = session_start()
    conv = start.conversation_id
    client = await rt.client(conv)
    runner = SessionRunner(rt.deps(), start, FakeClaim())
    task = asyncio.create_task(runner.run())
    try:
        await client.until("turn_complete")  # the greeting: subscribed, not looked yet
        yield conv, client, runner
        await rt.end(conv)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sequences the worker looked at the stream after (one per look)."""
    seen: list[int] = []
    look = streams.stored_input_after

    async def counted(js: Any, conversation_id: UUID, seq: int) -> bool:
        seen.append(seq)
        return await look(js, conversation_id, seq)

    monkeypatch.setattr(streams, "stored_input_after", counted)
    return seen


async def test_a_session_hears_its_input_as_the_stream_republishes_it(rt: Stack) -> None:
    """No consumer and no read of the stream: each input comes with its sequence and the one
    before it, so the worker knows it missed nothing."""
    async with greeted(rt) as (conv, client, runner):
        await asyncio.sleep(streams.RECHECKS_S[0] + 0.1)
        assert not runner.inputs.heard
        await rt.say(conv, "one")
        await rt.say(conv, "two")
        assert texts(await client.until("turn_complete")) == "You said: one"
        assert texts(await client.until("turn_complete")) == "You said: two"
        assert runner.inputs.heard and runner.inputs.from_stream == 0
        assert await input_consumers(rt, conv) == 0


async def test_an_input_missed_is_read_from_the_stream_when_the_next_one_shows_the_gap(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next input's previous sequence is past the last one read: what came between is read
    from the stream, once and in order."""
    dropping(monkeypatch, 1)
    monkeypatch.setattr(streams, "RECHECKS_S", (30.0,))  # no look finds it first
    async with greeted(rt) as (conv, client, runner):
        await rt.say(conv, "lost")
        await asyncio.sleep(0.3)
        assert runner.inputs.received == [] and runner.inputs.read_seq == 0
        await rt.say(conv, "next")
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: lost"
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: next"
        await rt.say(conv, "third")  # heard as usual; "next" was not answered twice before it
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: third"
        assert runner.inputs.from_stream == 2  # the lost one and the one after it, read together


async def test_an_input_dropped_by_the_subscription_is_read_at_once(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop for the subscription's pending limit is told (held_subscription's `on_dropped`): the
    last input is not left waiting for a next one."""
    dropping(monkeypatch, 1, told=True)
    monkeypatch.setattr(streams, "RECHECKS_S", (30.0,))
    async with greeted(rt) as (conv, client, runner):
        await rt.say(conv, "dropped")
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: dropped"
        assert runner.inputs.from_stream == 1


async def test_a_message_without_sequences_is_logged_and_skipped(rt: Stack) -> None:
    """Only the stream's republication carries the sequences: anything else on the subject is no
    input (logged), and the session goes on."""
    async with greeted(rt) as (conv, client, runner):
        with capture_logs() as logs:
            await rt.nc.publish(subjects.session_in_stored(str(conv)), b"{}", headers={"Nats-Sequence": "x"})
            await rt.nc.publish(subjects.session_in_stored(str(conv)), b"{}")
            await rt.nc.flush()
            await asyncio.sleep(0.2)
        assert [e["event"] for e in logs if e["event"] == "session.input_unsequenced"] == [
            "session.input_unsequenced"
        ] * 2
        assert runner.inputs.received == [] and runner.inputs.read_seq == 0
        await rt.say(conv, "after")
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: after"


async def test_a_new_leader_of_the_input_stream_makes_every_feed_look(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader that stored an input and died before republishing it: the new one's election
    advisory makes the worker's feeds look at the stream."""
    dropping(monkeypatch, 1)
    monkeypatch.setattr(streams, "RECHECKS_S", (30.0,))
    async with greeted(rt) as (conv, client, runner):
        watch = await bus.watch_input_leader(rt.nc, runner.deps.events)
        try:
            await rt.say(conv, "unpublished")
            await asyncio.sleep(0.3)
            assert runner.inputs.received == [] and runner.inputs.read_seq == 0
            await rt.nc.publish(subjects.SESSION_IN_LEADER_ELECTED, b"{}")
            assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: unpublished"
        finally:
            await watch.unsubscribe()


async def test_input_sent_before_the_claim_is_answered(rt: Stack, deaf_subscription: None) -> None:
    start = session_start()
    conv = start.conversation_id
    client = await rt.client(conv)
    await rt.say(conv, "early")
    runner = SessionRunner(rt.deps(), start, FakeClaim())
    task = asyncio.create_task(runner.run())
    try:
        await client.until("turn_complete")  # the greeting
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: early"
        await rt.end(conv)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_the_stream_is_looked_at_once_after_subscribing(
    rt: Stack, deaf_subscription: None, looks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input routed just before the worker subscribed, and stored a moment later, is not heard: the
    first look at the stream, `RECHECKS_S[0]` after subscribing, finds it."""
    monkeypatch.setattr(streams, "RECHECKS_S", (1.0, 1.5))  # the second finds the session's end
    async with greeted(rt) as (conv, client, _):
        assert looks == []
        await rt.say(conv, "unheard")
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: unheard"
        assert looks == [0]


async def test_input_stored_after_the_first_look_is_found_by_a_later_one(
    rt: Stack, deaf_subscription: None, looks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input the subscription missed and the first look did not see yet (a loaded broker stored it
    late) waits for a later look, then one every `RECHECK_EVERY_S`: never for ever."""
    monkeypatch.setattr(streams, "RECHECKS_S", (0.1, 0.2))
    monkeypatch.setattr(streams, "RECHECK_EVERY_S", 0.3)
    monkeypatch.setattr(streams, "LATER_LOOK_WINDOW_S", 0.0)  # no other session's look to wait for
    async with greeted(rt) as (conv, client, runner):
        await asyncio.sleep(0.6)  # the two first looks and one periodic look found nothing
        assert len(looks) >= 3 and runner.inputs.received == []
        await rt.say(conv, "stored late")
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: stored late"


async def test_input_sent_while_the_connection_was_away_is_read_after_the_reconnect(
    rt: Stack, deaf_subscription: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "RECHECKS_S", (0.25, 30.0))
    start = session_start()
    conv = start.conversation_id
    client = await rt.client(conv)
    deps = rt.deps()
    runner = SessionRunner(deps, start, FakeClaim())
    task = asyncio.create_task(runner.run())
    try:
        await client.until("turn_complete")  # the greeting
        # The first look (at 0.25 s, then up to its window waiting for others' looks) is over, the
        # next far: the input comes after it, with margin for a loaded machine.
        await asyncio.sleep(streams.RECHECKS_S[0] + streams.FIRST_LOOK_WINDOW_S + 0.3)
        await rt.say(conv, "while away")
        await asyncio.sleep(0.3)
        assert runner.inputs.read_seq == 0  # nothing heard: waits
        await deps.events.reconnected()
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: while away"
        await rt.end(conv)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_after_a_reconnect_sessions_never_spoken_to_ask_together(
    rt: Stack, looks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnect (or a new leader) makes every held session look: those that have read nothing
    ask in one request together (`InputLooks`), not one read of the stream each."""
    monkeypatch.setattr(streams, "RECHECKS_S", (30.0,))
    deps = rt.deps()
    starts = [session_start() for _ in range(streams.LOOKS_TOGETHER_MIN + 2)]
    clients = [await rt.client(start.conversation_id) for start in starts]
    tasks = [asyncio.create_task(SessionRunner(deps, start, FakeClaim()).run()) for start in starts]
    reads: list[int] = []
    get_msg = deps.looks.js.get_msg

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await get_msg(*args, **kwargs)

    monkeypatch.setattr(deps.looks.js, "get_msg", counted)
    try:
        for client in clients:
            await client.until("turn_complete")  # the greetings
        await deps.events.reconnected()
        await asyncio.sleep(streams.FIRST_LOOK_WINDOW_S + 0.5)
        assert looks == [] and reads == []  # one request answered for all of them
        await rt.say(starts[0].conversation_id, "still heard")
        assert texts(await clients[0].until("turn_complete", timeout_s=5)) == "You said: still heard"
        for start in starts:
            await rt.end(start.conversation_id)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        for task in tasks:
            task.cancel()


async def test_only_a_session_held_before_logs_its_claim_at_info(rt: Stack) -> None:
    for deliveries, level in ((1, "debug"), (2, "info")):
        start = session_start()
        client = await rt.client(start.conversation_id)
        with capture_logs() as logs:
            task = asyncio.create_task(SessionRunner(rt.deps(), start, FakeClaim(deliveries)).run())
            await client.until("turn_complete")
        try:
            assert [e["log_level"] for e in logs if e["event"] == "session.claimed"] == [level]
            await rt.end(start.conversation_id)
            await asyncio.wait_for(task, 10)
        finally:
            task.cancel()


async def test_a_session_held_before_reads_its_input_at_once(
    rt: Stack, deaf_subscription: None, looks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redelivered start (another worker may have run it; input may be waiting) reads what the
    stream holds at the claim (a look, as it has read nothing yet, then the read), without waiting
    for the first look due."""
    monkeypatch.setattr(streams, "RECHECKS_S", (2.0, 2.5))  # a look finds the session's end
    start = session_start()
    conv = start.conversation_id
    client = await rt.client(conv)
    await rt.say(conv, "waiting")
    runner = SessionRunner(rt.deps(), start, FakeClaim(deliveries=2))
    task = asyncio.create_task(runner.run())
    try:
        await client.until("turn_complete")  # the greeting
        assert texts(await client.until("turn_complete", timeout_s=5)) == "You said: waiting"
        assert looks == [0] and runner.inputs.from_stream == 1 and await input_consumers(rt, conv) == 0
        await rt.end(conv)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def test_the_looks_of_many_new_sessions_are_one_request(
    rt: Stack, looks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looks due together are one JetStream request (a consumer filtered on their subjects, never
    read); only when it counts input does each session get a look of its own, to say which."""
    monkeypatch.setattr(streams, "LOOKS_TOGETHER_MIN", 3)
    together = streams.InputLooks(rt.nc)
    quiet = [uuid4() for _ in range(5)]
    patience = [0.5, 0.05, 0.5, 0.5, 0.5]  # sent when the most impatient is due
    answers = await asyncio.wait_for(
        asyncio.gather(*(together.ask(conv, p) for conv, p in zip(quiet, patience, strict=True))), 0.4
    )
    assert answers == [False] * 5 and looks == []  # one request answered for all five
    assert await asyncio.gather(*(together.ask(conv, 0.0) for conv in quiet[:2])) == [False] * 2
    assert looks == [0, 0]  # too few together: one look each
    spoken = uuid4()
    await rt.say(spoken, "hello")
    lone = asyncio.ensure_future(together.ask(uuid4(), 0.0))
    lone.cancel()  # a session that closed while waiting: the others are answered all the same
    answers = await asyncio.gather(*(together.ask(conv, 0.0) for conv in [*quiet, spoken]))
    assert answers == [False] * 5 + [True]
    assert len(looks) == 2 + 6  # input counted: each one looked at on its own

    async def away(*_: Any, **__: Any) -> Any:
        raise TimeoutError

    monkeypatch.setattr(together.js, "add_consumer", away)
    assert await asyncio.gather(*(together.ask(conv, 0.0) for conv in quiet)) == [True] * 5


async def test_input_heard_while_a_look_waits_for_others_is_read_at_once(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look waits for other sessions' looks (up to a second for the later ones); input heard
    meanwhile does not wait for it."""
    monkeypatch.setattr(streams, "RECHECKS_S", (0.05, 30.0))
    monkeypatch.setattr(streams, "FIRST_LOOK_WINDOW_S", 30.0)
    async with greeted(rt) as (conv, client, runner):
        await asyncio.sleep(0.2)  # the first look is waiting for others
        assert runner.inputs._looking is not None
        await rt.say(conv, "heard")
        assert texts(await client.until("turn_complete", timeout_s=3)) == "You said: heard"


async def test_a_sessions_input_readers_start_outside_the_claims_span(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription and the looks' task run for the session's life, and each task keeps the
    context it was made in: made inside `runtime.claim`, they would keep that span (ended,
    exported) in memory as long as the session is held."""
    monkeypatch.setattr(runner_module, "tracer", TracerProvider().get_tracer("test"))
    seen: dict[str, trace.Span] = {}
    listen, schedule = bus.session_input, streams.InputFeed._schedule_look

    async def subscribed(
        nc: Any, conversation_id: UUID, on_msg: OnMsg, on_dropped: Callable[[], None]
    ) -> Any:
        seen["subscription"] = trace.get_current_span()
        return await listen(nc, conversation_id, on_msg, on_dropped)

    def looking(feed: streams.InputFeed) -> None:
        seen.setdefault("looks", trace.get_current_span())  # the looks' timer and tasks inherit it
        schedule(feed)

    monkeypatch.setattr(bus, "session_input", subscribed)
    monkeypatch.setattr(streams.InputFeed, "_schedule_look", looking)
    async with greeted(rt) as (conv, client, _):
        await rt.say(conv, "one")
        assert texts(await client.until("turn_complete")) == "You said: one"
    assert set(seen) == {"subscription", "looks"}
    assert all(not span.get_span_context().is_valid for span in seen.values()), seen


async def test_a_held_session_keeps_neither_its_start_message_nor_a_task_per_wait(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a held session keeps for its life: its state, not the start message it was made from;
    its input loop waits on one flag, not on a task reading a queue; its next look at the stream
    waits on a loop timer, not in a task (change 77)."""
    monkeypatch.setattr(streams, "RECHECKS_S", (30.0,))  # no look under way while it is checked
    start = session_start()
    conv = start.conversation_id
    client = await rt.client(conv)
    runner = SessionRunner(rt.deps(), start, FakeClaim())
    start_ref = weakref.ref(start)
    del start
    before = asyncio.all_tasks()
    task = asyncio.create_task(runner.run())
    try:
        await client.until("turn_complete")  # the greeting: held, waiting for input
        gc.collect()
        assert start_ref() is None
        # The session's own tasks (the runner's, and what its last turn left finishing): none waits
        # in a queue, and none is the input's (its next look waits on a timer).
        made = asyncio.all_tasks() - before
        waits = [t.get_coro().__qualname__ for t in made]  # type: ignore[union-attr]
        assert task in made and not any(name.startswith("Queue.") for name in waits), waits
        # This session's: sessions of earlier tests on the same loop may still look at their own.
        inputs = [t.get_name() for t in made if t.get_name().startswith("input-") and _of(t) is runner.inputs]
        assert not inputs, waits
        assert runner.inputs._timer is not None  # the next look
        await rt.end(conv)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


def _of(task: asyncio.Task[Any]) -> object:
    """The object whose method the task runs (None for a plain function or a finished task)."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    return None if frame is None else frame.f_locals.get("self")
