"""`SessionRunner`: one session from its start message to its end, on a real bus and Redis with a
fake agent and LLM: turns in input order, cancel, and the exactly-once resume after a crash. The
whole path through the gateway is in tests/e2e/test_realtime.py and test_faults_*."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg
from opentelemetry import trace

from parley_common import subjects
from parley_common.blueprint import Blueprint
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationEventBatch,
    ConversationMessage,
    ConversationStarted,
    conversation_msg_id,
)
from parley_common.session_contract import (
    ClientConnected,
    InputCancel,
    ServerTextDelta,
    ServerTextFull,
    SessionControl,
    SessionOutput,
)
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_runtime.sessions import runner as runner_module
from parley_runtime.sessions import streams
from parley_runtime.sessions.runner import SessionRunner

from .sessions_support import FakeClaim, Stack, session_start, stack


@pytest.fixture
async def rt(nats_url: str, infra: Any) -> AsyncIterator[Stack]:
    async with stack(nats_url, infra.redis_url) as value:
        yield value


def trace_id_in(headers: dict[str, str]) -> str:
    """The trace id of a message's `traceparent` header."""
    return headers.get("traceparent", "").split("-")[1]


def texts(events: list[dict[str, Any]]) -> str:
    return "".join(
        e.get("chunk", e.get("content", "")) for e in events if e["type"] in ("text_delta", "text_full")
    )


async def test_greets_answers_in_order_and_closes_once(rt: Stack) -> None:
    start = session_start()
    client = await rt.client(start.conversation_id)
    claim = FakeClaim()
    runner = SessionRunner(rt.deps(), start, claim)
    task = asyncio.create_task(runner.run())

    assert texts(await client.until("turn_complete")) == "Hi"
    # Two messages at once: answered one after the other, each in its own turn.
    await rt.say(start.conversation_id, "one")
    last = await rt.say(start.conversation_id, "two")
    assert texts(await client.until("turn_complete")) == "You said: one"
    assert texts(await client.until("turn_complete")) == "You said: two"
    assert [h[-1].content for _, h in rt.llm.calls] == ["one", "two"]
    assert rt.llm.calls[0][0] == "Be brief.\n\nHelp."

    await rt.end(start.conversation_id)
    closed = await client.until("session_closed")
    assert closed[-1]["reason"] == "client_end"
    await asyncio.wait_for(task, 10)
    assert claim.acks == 1

    state = await rt.deps().store.load(start.conversation_id)
    assert state is not None and state.phase == "closed" and state.last_input_seq > last
    assert [(h.role, h.content) for h in state.history] == [
        ("assistant", "Hi"), ("user", "one"), ("assistant", "You said: one"),
        ("user", "two"), ("assistant", "You said: two"),
    ]  # fmt: skip
    # The transcript, each event once, in order.
    kinds = [type(e).__name__ for e in client.transcript]
    assert kinds[0] == ConversationStarted.__name__ and kinds[-1] == ConversationEnded.__name__
    messages = [e for e in client.transcript if isinstance(e, ConversationMessage)]
    assert [(m.role.value, m.content, m.seq) for m in messages] == [
        ("assistant", "Hi", 0), ("user", "one", 1), ("assistant", "You said: one", 2),
        ("user", "two", 3), ("assistant", "You said: two", 4),
    ]  # fmt: skip
    # Each commit's events in one message, under an id made from theirs.
    published = [
        (headers["Nats-Msg-Id"], body.events if isinstance(body, ConversationEventBatch) else [body])
        for headers, body in client.transcript_msgs
    ]
    assert [[e.type.split(".")[1] for e in events] for _, events in published] == [
        ["started", "message"], ["message", "message"], ["message", "message"], ["ended"],
    ]  # fmt: skip
    assert [msg_id for msg_id, _ in published] == [conversation_msg_id(events) for _, events in published]


async def test_cancel_ends_the_answer_with_what_was_said(rt: Stack) -> None:
    start = session_start()
    client = await rt.client(start.conversation_id)
    task = asyncio.create_task(SessionRunner(rt.deps(), start, FakeClaim()).run())
    await client.until("turn_complete")

    rt.llm.hold.clear()  # the LLM stops after its first chunk
    await rt.say(start.conversation_id, "tell me everything")
    assert (await client.next()).model_dump(mode="json") == {"type": "text_delta", "chunk": "You said: "}
    await rt.send(start.conversation_id, InputCancel(at=start.started_at, connection_id="conn-1"))
    assert [e["type"] for e in await client.until("turn_complete")] == ["turn_complete"]

    state = await rt.deps().store.load(start.conversation_id)
    assert state is not None and state.history[-1].role == "assistant"
    assert state.history[-1].content.strip() == "You said:"
    rt.llm.hold.set()
    await rt.end(start.conversation_id)
    await asyncio.wait_for(task, 10)


async def test_a_new_owner_answers_the_interrupted_message_once(rt: Stack) -> None:
    start = session_start()
    client = await rt.client(start.conversation_id)
    first = asyncio.create_task(SessionRunner(rt.deps("worker-a"), start, FakeClaim()).run())
    await client.until("turn_complete")

    rt.llm.hold.clear()
    await rt.say(start.conversation_id, "hello")
    assert (await client.next()).model_dump(mode="json") == {"type": "text_delta", "chunk": "You said: "}
    first.cancel()  # the owner dies in the middle of the turn: nothing of it was committed
    with pytest.raises(asyncio.CancelledError):
        await first

    rt.llm.hold.set()
    claim = FakeClaim(deliveries=2)
    second = asyncio.create_task(SessionRunner(rt.deps("worker-b"), start, claim).run())
    events = await client.until("turn_complete")
    # The client is told the turn starts again, gets the whole answer, and no second greeting.
    assert events[0] == {
        "type": "error",
        "code": "realtime.turn_restarted",
        "message": events[0]["message"],
    }
    assert texts(events) == "You said: hello"
    await rt.end(start.conversation_id)
    await client.until("session_closed")
    await asyncio.wait_for(second, 10)
    assert claim.acks == 1
    # The new owner publishes the committed transcript again under the same event ids (the catalog
    # keeps one of each); the interrupted turn is in it once.
    unique = {m.event_id: m for m in client.transcript if isinstance(m, ConversationMessage)}
    messages = [(m.role.value, m.content) for m in unique.values()]
    assert messages == [("assistant", "Hi"), ("user", "hello"), ("assistant", "You said: hello")]
    # The greeting's commit, published again by the new owner, is the same message (the same
    # `Nats-Msg-Id`: JetStream stores it once).
    opening_id, opening = client.transcript_msgs[0][0]["Nats-Msg-Id"], client.transcript_msgs[0][1]
    assert isinstance(opening, ConversationEventBatch) and len(opening.events) == 2
    assert [headers["Nats-Msg-Id"] for headers, _ in client.transcript_msgs].count(opening_id) == 2
    assert await rt.deps().store.owner(start.conversation_id) == "worker-b"


async def test_an_outbox_too_long_for_one_message_goes_event_by_event(rt: Stack) -> None:
    rt.nc._max_payload = 800  # a commit's events over half of it are published one by one
    start = session_start()
    client = await rt.client(start.conversation_id)
    task = asyncio.create_task(SessionRunner(rt.deps(), start, FakeClaim()).run())
    await client.until("turn_complete")
    await rt.say(start.conversation_id, "hello")
    await client.until("turn_complete")
    await rt.end(start.conversation_id)
    await client.until("session_closed")
    await asyncio.wait_for(task, 10)
    bodies = [body for _, body in client.transcript_msgs]
    assert bodies and not any(isinstance(body, ConversationEventBatch) for body in bodies)
    assert sorted(e.type for e in client.transcript) == sorted(
        ["conversation.started", *["conversation.message"] * 3, "conversation.ended"]
    )
    # Each under its own event id, as before batches.
    assert {headers["Nats-Msg-Id"] for headers, _ in client.transcript_msgs} == {
        str(e.event_id) for e in client.transcript
    }


async def test_outputs_carry_no_trace_context(rt: Stack) -> None:
    """Nothing reads a trace context from `SESSION_OUT` (the turn itself continues the input's
    trace, `tests/e2e/test_realtime_tracing.py`), and a delta is never published again, so it needs
    no `Nats-Msg-Id`: it carries no header. The event that ends the turn carries its id alone (a new
    owner republishes a committed tail); the transcript keeps the turn's context (the catalog's
    span continues it)."""
    setup_telemetry(CommonSettings())  # real spans, so a context would be injected
    start = session_start()
    seen: list[tuple[str, dict[str, str]]] = []

    async def out(msg: Msg) -> None:
        seen.append((SessionOutput.model_validate_json(msg.data).event.type, dict(msg.headers or {})))

    sub = await rt.nc.subscribe(subjects.session_out(str(start.conversation_id)), cb=out)
    client = await rt.client(start.conversation_id)
    task = asyncio.create_task(SessionRunner(rt.deps(), start, FakeClaim()).run())
    try:
        await client.until("turn_complete")
        with trace.get_tracer("test").start_as_current_span("test.input") as sent:
            await rt.say(start.conversation_id, "hello")  # the input carries its trace context
        await client.until("turn_complete")
        await rt.end(start.conversation_id)
        await client.until("session_closed")
        await asyncio.wait_for(task, 10)
    finally:
        await sub.unsubscribe()
    deltas = [headers for kind, headers in seen if kind == "text_delta"]
    assert len(deltas) == 2 and all(headers == {} for headers in deltas), seen
    tails = [headers for kind, headers in seen if kind in ("turn_complete", "session_closed")]
    assert len(tails) == 3 and all(list(headers) == ["Nats-Msg-Id"] for headers in tails), seen
    # The turn's transcript continues the turn's trace (the input's), not the session's.
    (answered,) = [h for h, body in client.transcript_msgs if "hello" in body.model_dump_json()]
    assert trace_id_in(answered) == f"{sent.get_span_context().trace_id:032x}"


async def test_a_turn_that_ends_the_flow_writes_its_transcript_in_its_trace(rt: Stack) -> None:
    """A flow that ends on a user's message: its last transcript (the message, the end) continues
    the input's trace as any turn's does, not the session's."""
    setup_telemetry(CommonSettings())
    rt.agents.snapshot = rt.agents.snapshot.model_copy(
        update={
            "blueprint": Blueprint.model_validate(
                {"entries": [{"name": "main", "workflow": {
                    "nodes": [
                        {"id": "s", "type": "CONTROL.START", "data": {"greeting": "Hi"}},
                        {"id": "d", "type": "CONTROL.DIALOG", "data": {"message": "Ok.", "max_turns": 1}},
                        {"id": "e", "type": "CONTROL.END", "data": {"message": "Bye."}},
                    ],
                    "edges": [{"source": "s", "target": "d"}, {"source": "d", "target": "e"}],
                }}]}
            )
        }
    )  # fmt: skip
    start = session_start()
    client = await rt.client(start.conversation_id)
    task = asyncio.create_task(SessionRunner(rt.deps(), start, FakeClaim()).run())
    await client.until("turn_complete")
    with trace.get_tracer("test").start_as_current_span("test.input") as sent:
        await rt.say(start.conversation_id, "hello")
    await client.until("session_closed")
    await asyncio.wait_for(task, 10)
    (last,) = [h for h, body in client.transcript_msgs if "hello" in body.model_dump_json()]
    assert "conversation.ended" in client.transcript_msgs[-1][1].model_dump_json()
    assert last is client.transcript_msgs[-1][0]
    assert trace_id_in(last) == f"{sent.get_span_context().trace_id:032x}"


async def test_only_a_session_held_before_asks_for_its_last_output(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A brand-new session (its start message's first delivery, its first claim, no state) skips
    the JetStream read of its last output: nothing can have published any. A session a worker
    may have held before (a redelivery, a second claim) reads it, so a turn cut short is still
    restarted and not doubled (test above)."""
    asked: list[Any] = []
    real = streams.last_output_index

    async def counted(js: Any, conversation_id: Any) -> int:
        asked.append(conversation_id)
        return await real(js, conversation_id)

    monkeypatch.setattr(runner_module, "last_output_index", counted)

    async def claimed(start: Any, claim: FakeClaim, worker: str, *, greeting: bool) -> None:
        client = await rt.client(start.conversation_id)
        runner = SessionRunner(rt.deps(worker), start, claim)
        task = asyncio.create_task(runner.run())
        if greeting:
            await client.until("turn_complete")
        while runner.outlet is None:
            await asyncio.sleep(0.01)
        # Python 3.11's `wait_for` (inside nats-py's requests) can swallow a cancellation that
        # lands while the runner publishes: cancel until the task has ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)

    new = session_start()
    await claimed(new, FakeClaim(), "worker-a", greeting=True)
    assert asked == []
    # Claimed a second time, on a first delivery (its greeting committed: none again).
    await claimed(new, FakeClaim(), "worker-b", greeting=False)
    assert asked == [new.conversation_id]
    redelivered = session_start()  # no state, first claim, but delivered before
    await claimed(redelivered, FakeClaim(deliveries=2), "worker-a", greeting=True)
    assert asked == [new.conversation_id, redelivered.conversation_id]


async def test_a_turn_carries_its_timing_in_its_outputs_not_in_control_messages(
    rt: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text turn publishes no `session.<id>.ctl` message: its first output carries the busy
    timing (no silence limit), its `turn_complete` the waiting one. Control messages (which name
    the live connection) come at the claim, when a client connects, and when a turn says nothing
    for `busy_timing_delay_s`; each carries the last output index numbered when it was sent."""
    monkeypatch.setattr(SessionRunner, "busy_timing_delay_s", 0.2)
    start = session_start()
    conv = str(start.conversation_id)
    controls: list[SessionControl] = []

    async def on_ctl(msg: Msg) -> None:
        controls.append(SessionControl.model_validate_json(msg.data))

    sub = await rt.nc.subscribe(subjects.session_ctl(conv), cb=on_ctl)
    client = await rt.client(start.conversation_id)

    async def turn() -> list[SessionOutput]:
        outs = [await asyncio.wait_for(client.out.get(), 10)]
        while outs[-1].event.type != "turn_complete":
            outs.append(await asyncio.wait_for(client.out.get(), 10))
        return outs

    runner = SessionRunner(rt.deps(), start, FakeClaim())
    task = asyncio.create_task(runner.run())
    try:
        greeting = await turn()
        end = start.started_at + runner.timers.max_duration
        for _ in range(3):
            await rt.say(start.conversation_id, "hello")
            outs = await turn()
            assert [o.timing is not None for o in outs] == [True] + [False] * (len(outs) - 2) + [True]
            busy, waiting = outs[0].timing, outs[-1].timing
            assert busy is not None and busy.started_at == start.started_at and busy.deadline_at == end
            assert waiting is not None and waiting.deadline_at is not None
            assert busy.started_at + runner.timers.max_silence < waiting.deadline_at < end
        # The claim's control message only, before the greeting's first output.
        assert [(c.index, c.connection_id, c.deadline_at) for c in controls] == [(0, "conn-1", end)]
        assert greeting[0].timing is not None and greeting[-1].timing is not None

        # A client connects: the live connection and the timing, as of the last index numbered.
        await rt.send(start.conversation_id, ClientConnected(at=start.started_at, connection_id="conn-2"))
        while len(controls) < 2:
            await asyncio.sleep(0.01)
        assert (controls[1].index, controls[1].connection_id) == (outs[-1].index, "conn-2")
        assert waiting is not None and controls[1].deadline_at == waiting.deadline_at

        # A turn that says nothing for a while publishes its busy timing instead.
        rt.llm.begin.clear()
        await rt.say(start.conversation_id, "slow")
        while len(controls) < 3:
            await asyncio.sleep(0.01)
        assert (controls[2].index, controls[2].connection_id, controls[2].deadline_at) == (
            outs[-1].index, "conn-2", end,
        )  # fmt: skip
        rt.llm.begin.set()
        slow = await turn()
        assert [o.timing is not None for o in slow] == [False] * (len(slow) - 1) + [True]
        await rt.end(start.conversation_id)
        await client.until("session_closed")
        await asyncio.wait_for(task, 10)
        assert len(controls) == 3
    finally:
        rt.llm.begin.set()
        await sub.unsubscribe()


async def test_an_answers_last_text_goes_out_with_the_turns_end(nats_url: str, infra: Any) -> None:
    """The text an answer held back at its end is published with the turn's end (one write), not
    when its delta window ends: with a window of a minute, the turn still ends at once, the text
    complete and in order, the delta still without headers."""
    async with stack(nats_url, infra.redis_url, runtime_delta_window_ms=60_000) as slow_window:
        start = session_start()
        seen: list[tuple[int, str, dict[str, str]]] = []

        async def out(msg: Msg) -> None:
            output = SessionOutput.model_validate_json(msg.data)
            seen.append((output.index, output.event.type, dict(msg.headers or {})))

        sub = await slow_window.nc.subscribe(subjects.session_out(str(start.conversation_id)), cb=out)
        client = await slow_window.client(start.conversation_id)
        task = asyncio.create_task(SessionRunner(slow_window.deps(), start, FakeClaim()).run())
        try:
            await client.until("turn_complete")
            await slow_window.say(start.conversation_id, "hello")
            answer = await client.until("turn_complete", timeout_s=10)  # not the window's minute
            assert texts(answer) == "You said: hello"
            assert [e["type"] for e in answer] == ["text_delta", "text_delta", "turn_complete"]
            await slow_window.end(start.conversation_id)
            await client.until("session_closed")
            await asyncio.wait_for(task, 10)
        finally:
            await sub.unsubscribe()
        assert [index for index, _, _ in seen] == list(range(1, len(seen) + 1))
        assert all(headers == {} for _, kind, headers in seen if kind == "text_delta"), seen


async def test_a_held_event_goes_out_before_the_next_one_or_when_its_time_is_up(rt: Stack) -> None:
    conv = session_start().conversation_id
    client = await rt.client(conv)
    outlet = streams.Outlet(rt.nc, conv, next_index=1)
    await outlet.hold(ServerTextDelta(chunk="held"), within_s=60)
    await outlet.emit(ServerTextFull(content="next"))  # a later output: the held one first
    assert [await client.next() for _ in range(2)] == [
        ServerTextDelta(chunk="held"),
        ServerTextFull(content="next"),
    ]
    await outlet.hold(ServerTextDelta(chunk="alone"), within_s=0.05)  # nothing follows it
    assert await client.next(timeout_s=5) == ServerTextDelta(chunk="alone")
    await outlet.hold(ServerTextDelta(chunk="taken"), within_s=0.05)
    taken = outlet.take_held()  # the caller publishes it (a turn's end): the timer does not
    assert taken is not None and taken.index == 4 and outlet.take_held() is None
    await asyncio.sleep(0.2)
    assert client.out.empty()
