"""NATS killed and restarted under live sessions (docs/realtime.md, "When the broker or Redis
restarts").

The stack's own nats-server is SIGKILLed and started again OUTAGE_S later on the same port with the
same JetStream directory. What must hold: input a client sent during the outage is stored once and
answered once (no false error, no duplicate, in the socket's events and in the transcript the
catalog persisted), a chat client resending a message with the same `id` gets it answered once, a
message that could not be stored in time is reported and its resend answered once, a turn that was
streaming when the broker died goes on within a few seconds of its return on the same worker (the
claim's ack wait is shorter than the outage here, so the restarted broker does redeliver the
session's start: the other worker must leave it to its living owner), and an agent-session trigger
posted during the outage runs once the broker is back. Measured times are printed; the bounds of
the assertions are generous because the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tests.e2e.faultstack import FaultStack, fault_stack  # noqa: F401 - the module's stack
from tests.e2e.harness import (
    LONG,
    api_key,
    chat_agent,
    client_token,
    eventually,
    kinds,
    make_agent,
    ready,
    session,
    signup,
    text_of,
    transcript,
)
from tests.e2e.test_octavus_sessions import Client as OctavusClient
from websockets.asyncio.client import ClientConnection, connect

from parley_devstack.servers import ManagedProcess, free_port

OUTAGE_S = 5.0  # the broker is down this long (the scenario of the issue, not a wait for a result)
RESUME_BOUND_S = 8.0  # target 3 s; generous because the machine is shared
ACK_WAIT_S = 3.0  # shorter than the outage: the restarted broker finds every claim overdue
SHORT_PUBLISH_S = 2.0  # the second gateway gives up storing an input after this long


@pytest.fixture(scope="module")
def fault_env() -> dict[str, str]:
    return {
        "PARLEY_RUNTIME_CLAIM_ACK_WAIT_S": str(ACK_WAIT_S),
        "PARLEY_RUNTIME_CLAIM_HEARTBEAT_S": str(ACK_WAIT_S / 4),
    }


@pytest.fixture(scope="module")
async def impatient_gateway(fault_stack: FaultStack) -> AsyncIterator[str]:  # noqa: F811
    """A second gateway that reports an input as failed after SHORT_PUBLISH_S (its chat URL)."""
    port = free_port()
    proc = ManagedProcess(
        "gateway-impatient",
        [sys.executable, "-m", "parley_session_gateway"],
        env={
            **fault_stack.env,
            "PARLEY_HTTP_PORT": str(port),
            "PARLEY_BUS_PUBLISH_TIMEOUT_S": str(SHORT_PUBLISH_S),
        },
        log_path=fault_stack.logs / "gateway-impatient.log",
    )
    proc.probe = lambda: ready(port)  # type: ignore[method-assign]
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready, 60)
        yield f"ws://127.0.0.1:{port}/chat/ws"
    finally:
        await asyncio.to_thread(proc.stop, 10)


def _said(text: str) -> str:
    return f'You said: "{text}".'


async def test_input_sent_while_nats_is_down_is_answered_once(fault_stack: FaultStack) -> None:  # noqa: F811
    stack = fault_stack
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        stack.kill_nats()
        await s.send({"type": "input_text", "text": "sent during the outage"})
        await asyncio.sleep(OUTAGE_S)
        back = await stack.start_nats()
        events = await s.until("turn_complete", timeout=40)
        took = time.monotonic() - back
        print(f"\ninput sent during a {OUTAGE_S:.0f} s NATS outage answered {took:.2f} s after its return")
        assert "error" not in kinds(events), events
        assert text_of(events) == _said("sent during the outage")
        assert took < RESUME_BOUND_S
        assert text_of(await s.say("and after")) == _said("and after")
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    conv = await transcript(stack, user, s.conversation_id, ended=True)
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", "sent during the outage"),
        ("assistant", _said("sent during the outage")),
        ("user", "and after"),
        ("assistant", _said("and after")),
    ]


async def test_a_streaming_turn_resumes_soon_after_nats_returns(fault_stack: FaultStack) -> None:  # noqa: F811
    stack = fault_stack
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        for _ in range(3):
            assert (await s.recv())["type"] == "text_delta"
        owner = await stack.redis.get(f"parley:rt:session:{s.conversation_id}:owner")
        stack.kill_nats()
        await asyncio.sleep(OUTAGE_S)
        back = await stack.start_nats()
        first = await s.recv(timeout=40)
        took = time.monotonic() - back
        rest = (
            [first, *await s.until("turn_complete", timeout=40)]
            if first["type"] != "turn_complete"
            else [first]
        )
        print(f"\na turn cut by a {OUTAGE_S:.0f} s NATS outage went on {took:.2f} s after its return")
        assert "error" not in kinds(rest), rest
        assert text_of(s.events[1:]) == _said(LONG)
        assert took < RESUME_BOUND_S
        # The same worker kept the session: no second claim, no lost ownership.
        assert await stack.redis.get(f"parley:rt:session:{s.conversation_id}:owner") == owner
        assert text_of(await s.say("still there?")) == _said("still there?")
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", LONG),
        ("assistant", _said(LONG)),
        ("user", "still there?"),
        ("assistant", _said("still there?")),
    ]
    for worker in stack.workers:
        assert "session.ownership_lost" not in stack.log_text(worker.name)


# ------------------------------------------------------------------------------------ chat


@asynccontextmanager
async def chat(
    stack: FaultStack, token: str, url: str | None = None
) -> AsyncIterator[tuple[ClientConnection, str]]:
    url = url or stack.gateway_url.replace("/realtime", "/chat/ws")
    async with connect(f"{url}?token={token}", max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "connected", hello
        yield ws, hello["session_id"]


async def chat_until(ws: ClientConnection, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if event["type"] != "heartbeat":
            got.append(event)
        if event["type"] == kind:
            return got


async def test_a_chat_message_resent_with_its_id_is_answered_once(fault_stack: FaultStack) -> None:  # noqa: F811
    stack = fault_stack
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    token = await client_token(stack, await api_key(stack, user), agent)
    async with chat(stack, token) as (ws, session_id):
        await chat_until(ws, "response-end")
        stack.kill_nats()
        message = {"type": "message", "content": "sent twice", "id": "m-1"}
        await ws.send(json.dumps(message))
        await asyncio.sleep(OUTAGE_S / 2)
        await ws.send(json.dumps(message))  # the client gave up waiting and resent it, same id
        await asyncio.sleep(OUTAGE_S / 2)
        await stack.start_nats()
        events = await chat_until(ws, "response-end", timeout=40)
        acks = [e for e in events if e["type"] == "message-ack"]
        assert [e for e in events if e["type"] == "message-error"] == []
        assert acks and all(a["id"] == "m-1" for a in acks)
        assert events[-1]["content"] == _said("sent twice")
        # Once more after the answer (a client that missed the ack): accepted, not answered again.
        await ws.send(json.dumps(message))
        await ws.send(json.dumps({"type": "message", "content": "next", "id": "m-2"}))
        events = await chat_until(ws, "response-end", timeout=20)
        assert [e["content"] for e in events if e["type"] == "response-end"] == [_said("next")]
        assert [e["id"] for e in events if e["type"] == "message-ack"][-2:] == ["m-1", "m-2"]

    async def settled() -> dict[str, Any] | None:
        c = await transcript(stack, user, session_id, ended=False)
        return c if len(c["messages"]) >= 5 else None

    conv = await eventually(settled, what="the chat transcript")
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", "sent twice"),
        ("assistant", _said("sent twice")),
        ("user", "next"),
        ("assistant", _said("next")),
    ]


async def test_an_input_not_stored_in_time_is_reported_and_its_resend_answered_once(
    fault_stack: FaultStack,  # noqa: F811
    impatient_gateway: str,
) -> None:
    stack = fault_stack
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    token = await client_token(stack, await api_key(stack, user), agent)
    async with chat(stack, token, impatient_gateway) as (ws, session_id):
        await chat_until(ws, "response-end")
        stack.kill_nats()
        message = {"type": "message", "content": "not stored in time", "id": "m-9"}
        await ws.send(json.dumps(message))
        sent = time.monotonic()
        (refused,) = await chat_until(ws, "message-error", timeout=SHORT_PUBLISH_S + 10)
        assert refused["id"] == "m-9" and refused["error"].startswith("service.unavailable: ")
        assert time.monotonic() - sent >= SHORT_PUBLISH_S * 0.9
        await stack.start_nats()
        # As docs/chat-ws.md says: resend it with the same id. It is stored and answered once.
        await ws.send(json.dumps(message))
        events = await chat_until(ws, "response-end", timeout=30)
        while "message-ack" not in [e["type"] for e in events]:  # it may come after the answer
            events += await chat_until(ws, "message-ack", timeout=10)
        assert [e["id"] for e in events if e["type"] == "message-ack"] == ["m-9"]
        assert [e["content"] for e in events if e["type"] == "response-end"] == [_said("not stored in time")]
        await ws.send(json.dumps({"type": "message", "content": "next", "id": "m-10"}))
        events = await chat_until(ws, "response-end", timeout=20)
        assert [e["content"] for e in events if e["type"] == "response-end"] == [_said("next")]

    async def settled() -> dict[str, Any] | None:
        c = await transcript(stack, user, session_id, ended=False)
        return c if len(c["messages"]) >= 5 else None

    conv = await eventually(settled, what="the chat transcript")
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", "not stored in time"),
        ("assistant", _said("not stored in time")),
        ("user", "next"),
        ("assistant", _said("next")),
    ]


# ------------------------------------------------------------------------------------ Octavus


async def test_an_agent_session_trigger_posted_during_the_outage_runs_after_it(
    fault_stack: FaultStack,  # noqa: F811
) -> None:
    stack = fault_stack
    octavus = OctavusClient(stack, await api_key(stack, await signup(stack)))
    session_id = await octavus.create_session(await octavus.create_agent(), {"COMPANY": "Acme"})
    trigger = {"triggerName": "user-message", "input": {"USER_MESSAGE": "hello"}}
    stack.kill_nats()
    url = f"/api/agent-sessions/{session_id}/trigger"
    during = asyncio.create_task(octavus.http.post(url, json=trigger))
    await asyncio.sleep(OUTAGE_S)
    back = await stack.start_nats()
    resp = await during
    print(f"\na trigger posted during a NATS outage ran {time.monotonic() - back:.2f} s after its return")
    # The request waited for the broker and the worker (no false `bus.timeout`), and ran once.
    assert resp.status_code == 200, resp.text
    data = [line[len("data: ") :] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert "error" not in [e["type"] for e in events], events
    state = await octavus.get(session_id)
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"]
    # And the next one as usual.
    assert "error" not in [e["type"] for e in await octavus.trigger(session_id, trigger)]
