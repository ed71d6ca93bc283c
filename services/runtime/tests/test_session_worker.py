"""`SessionWorker`: claims session starts from the `SESSIONS` work queue, holds each while it runs,
acks it when the session closes, hands it to another worker when it stops, and leaves a session
another living worker holds alone. Worker deaths under load are in tests/e2e/test_faults_*."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nats.js.api import ConsumerInfo

from parley_common import subjects
from parley_common.session_contract import SessionStart, trace_headers
from parley_runtime.sessions.worker import SessionWorker

from .sessions_support import Conversation, Stack, session_start, stack


@pytest.fixture
async def rt(nats_url: str, infra: Any) -> AsyncIterator[Stack]:
    # Short claim timings: a redelivery comes within a second or two.
    async with stack(
        nats_url,
        infra.redis_url,
        runtime_claim_ack_wait_s=1.0,
        runtime_claim_heartbeat_s=0.25,
        runtime_drain_timeout_s=2.0,
    ) as value:
        yield value


async def open_session(rt: Stack) -> tuple[SessionStart, Conversation]:
    """Start a session as the gateway does; returns once a worker has greeted."""
    start = session_start()
    client = await rt.client(start.conversation_id)
    await rt.nc.jetstream().publish(
        subjects.SESSION_START,
        start.model_dump_json().encode(),
        headers=trace_headers({"Nats-Msg-Id": str(start.conversation_id)}),
    )
    await client.until("turn_complete")
    return start, client


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _value(check()):
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


async def consumer(rt: Stack) -> ConsumerInfo:
    js = rt.nc.jetstream()
    info: ConsumerInfo = await js.consumer_info(subjects.SESSIONS_STREAM, subjects.RUNTIME_SESSIONS_CONSUMER)
    return info


async def unacked(rt: Stack) -> int:
    return int((await consumer(rt)).num_ack_pending or 0)


@asynccontextmanager
async def running(rt: Stack, token: str | None = None) -> AsyncIterator[SessionWorker]:
    """A worker pulling session starts until the block ends (then stopped: drained, handed back)."""
    worker = SessionWorker(rt.deps(token))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def test_a_claimed_session_is_held_while_it_runs_and_acked_when_it_closes(rt: Stack) -> None:
    async with running(rt) as worker:
        start, client = await open_session(rt)
        assert worker.active == 1 and await unacked(rt) == 1
        # What it holds is the message's reply subject, not its body or headers (nor a dict).
        held = worker.claims[start.conversation_id]
        assert held.msg.reply and held.msg.data == b"" and held.msg.headers is None
        assert not hasattr(held, "__dict__")
        # Held past ack_wait: the heartbeats keep it from being redelivered.
        await asyncio.sleep(1.5)
        assert worker.active == 1 and await unacked(rt) == 1

        await rt.say(start.conversation_id, "hello")
        await client.until("turn_complete")
        await rt.end(start.conversation_id)
        await client.until("session_closed")

        async def released() -> bool:
            # Acked, forgotten and the lease given up (the next worker offered it needs no wait).
            lease = await rt.deps().store.lease_holder(start.conversation_id)
            return worker.active == 0 and await unacked(rt) == 0 and lease is None

        await eventually(released)


async def test_a_stopping_worker_hands_its_sessions_to_another(rt: Stack) -> None:
    async with running(rt, "worker-a"):
        start, client = await open_session(rt)
    # Stopped with nothing running: handed back at once (nak), lease released.
    async with running(rt, "worker-b") as second:
        await eventually(lambda: second.active == 1)
        # The session goes on where it was: no second greeting, the next message answered.
        await rt.say(start.conversation_id, "still there?")
        events = await client.until("turn_complete")
        assert [e["type"] for e in events] == ["text_delta", "text_delta", "turn_complete"]
        assert await rt.deps().store.owner(start.conversation_id) == "worker-b"
        await rt.end(start.conversation_id)
        await client.until("session_closed")


async def test_a_redelivered_start_is_left_to_the_living_owner(rt: Stack) -> None:
    async with running(rt, "worker-a") as owner:
        start, client = await open_session(rt)
        async with running(rt, "worker-b") as other:
            # The owner's heartbeats stop (as in a long broker outage) but its lease is renewed:
            # the start message is redelivered to both workers in turn, and only the owner keeps
            # running it.
            owner._tasks[1].cancel()  # the heartbeat loop
            renew = asyncio.create_task(_renew(rt, owner, start))
            await asyncio.sleep(3)
            assert other.active == 0 and owner.active == 1
            assert ((await consumer(rt)).num_redelivered or 0) >= 1  # offered again, and declined
            renew.cancel()
            await rt.say(start.conversation_id, "who answers?")
            await client.until("turn_complete")
            assert await rt.deps().store.owner(start.conversation_id) == "worker-a"


async def _renew(rt: Stack, worker: SessionWorker, start: SessionStart) -> None:
    while True:
        store = rt.deps().store
        await store.renew_leases([store.lease_key(start.conversation_id)], worker.deps.token)
        await asyncio.sleep(0.2)


async def _value(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value
