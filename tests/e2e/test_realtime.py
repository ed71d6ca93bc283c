# One piece (521 lines): the Kivox realtime protocol end to end over one module-scoped stack
# (tests/e2e/harness); splitting would start a second stack.
"""The Kivox realtime protocol end to end, over the real stack.

One stack for the module: its own NATS server (so no other module's auth or catalog app shares the
`auth`/`catalog` queue groups with ours), the session's Redis and PostgreSQL, the real auth and
catalog apps in-process, and the session gateway and two runtime workers as processes of their own
(`python -m …`), so a worker can be killed with SIGKILL. Clients talk to the gateway with the
`websockets` library exactly as a browser SDK would; users, keys, tokens and agents are made through
the real auth and catalog HTTP APIs, and transcripts are read back from the catalog.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.harness import (
    ACK_WAIT_S,
    LONG,
    Hooks,
    Stack,
    api_key,
    chat_agent,
    client_token,
    edge,
    eventually,
    kinds,
    make_agent,
    node,
    session,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    text_of,
    transcript,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# ruff: noqa: F811 - `stack` parameters are the fixture imported above


async def test_every_node_type_and_the_transcript(stack: Stack) -> None:
    user = await signup(stack)
    Hooks.received.clear()
    nodes = [
        node(
            "start", "CONTROL.START", greeting="Hello {{ visitor }}!", variables={"visitor": "friend", "n": 1}
        ),
        node("count", "FUNCTION.SET_VAR", assignments=[{"name": "n", "value": "n + 1"}]),
        node(
            "crm",
            "FUNCTION.WEBHOOK",
            url=stack.hooks_url + "/crm?visitor={{ visitor }}",
            headers={"X-Token": "{{ secrets.CRM_TOKEN }}"},
            body={"conversation": "{{ conversation_id }}", "n": "{{ n }}"},
            save_as="crm",
            timeout_s=5,
        ),
        node("vip", "LOGICAL.EVAL", expression="crm.vip and n == 2"),
        node("chat", "CONTROL.DIALOG", prompt="You are a concierge for {{ crm.name }}."),
        node("ask", "CONTROL.DIALOG", message="What is your email, {{ crm.name }}?", save_reply_as="email"),
        node(
            "notify",
            "FUNCTION.EMAIL_NOTIFY",
            to="{{ email }}",
            subject="Follow-up for {{ crm.name }} {{ conversation_id }}",
            body="Visitor said: {{ last_user_message }}",
        ),
        node("done", "CONTROL.END", message="Goodbye {{ crm.name }}, we wrote to {{ email }}."),
        node("nope", "CONTROL.END", message="Not for you."),
        node("broken", "CONTROL.END", message="The CRM is down."),
    ]
    edges = [
        edge("start", "count"),
        edge("count", "crm"),
        edge("crm", "vip", branch="success"),
        edge("crm", "broken", branch="error"),
        edge("vip", "chat", branch="true"),
        edge("vip", "nope", branch="false"),
        edge("chat", "ask"),
        edge("ask", "notify"),
        edge("notify", "done"),
    ]
    agent = await make_agent(stack, user, nodes, edges, secrets={"CRM_TOKEN": "s3cret"})

    async with session(stack, agent, cookie=user.cookie) as s:
        opening = await s.until("turn_complete")
        assert opening == [{"type": "text_full", "content": "Hello friend!"}, {"type": "turn_complete"}]
        (hook,) = Hooks.received
        assert hook["path"] == "/crm?visitor=friend"
        assert hook["headers"]["X-Token"] == "s3cret"
        assert hook["body"] == {"conversation": s.conversation_id, "n": "2"}

        answer = await s.say("I need a table for two")
        # The LLM ran under the DIALOG's templated prompt (the built-in engine quotes its persona).
        assert text_of(answer) == 'As a concierge for Ada, I heard: "I need a table for two".'
        assert answer[-2:] == [
            {"type": "text_full", "content": "What is your email, Ada?"},
            {"type": "turn_complete"},
        ]

        await s.send({"type": "input_text", "text": "ada@example.com"})
        closing = await s.until("session_closed")
        assert closing == [
            {"type": "text_full", "content": "Goodbye Ada, we wrote to ada@example.com."},
            {"type": "flow_complete"},
            {"type": "session_closed", "reason": "flow_end"},
        ]

    conv = await transcript(stack, user, s.conversation_id)
    assert conv["end_reason"] == "flow_end"
    assert conv["messages"] == [
        ("assistant", "Hello friend!"),
        ("user", "I need a table for two"),
        ("assistant", 'As a concierge for Ada, I heard: "I need a table for two".'),
        ("assistant", "What is your email, Ada?"),
        ("user", "ada@example.com"),
        ("assistant", "Goodbye Ada, we wrote to ada@example.com."),
    ]

    # EMAIL_NOTIFY went through the bus into the auth service's outbox, which delivered it.
    async def mailed() -> list[Path]:
        return [p for p in stack.mail_dir.glob("*.eml") if s.conversation_id in p.read_text()]

    (mail,) = await eventually(mailed, what="the notification mail")
    text = mail.read_text()
    assert "To: ada@example.com" in text and "Visitor said: ada@example.com" in text


async def test_transfer_and_terminate(stack: Stack) -> None:
    user = await signup(stack)
    target = await make_agent(stack, user, *chat_agent())
    nodes = [
        node("start", "CONTROL.START"),
        node("ask", "CONTROL.DIALOG", message="Talk to sales?", save_reply_as="answer"),
        node("yes", "LOGICAL.EVAL", expression="answer == 'yes'"),
        node("transfer", "FUNCTION.TRANSFER", agent_id=target, reason="{{ answer }}: wants sales"),
        node("stop", "FUNCTION.TERMINATE", message="OK, bye.", reason="declined"),
    ]
    edges = [
        edge("start", "ask"),
        edge("ask", "yes"),
        edge("yes", "transfer", branch="true"),
        edge("yes", "stop", branch="false"),
    ]
    agent = await make_agent(stack, user, nodes, edges)

    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": "yes"})
        events = await s.until("session_closed")
        assert events == [
            {"type": "transfer", "agent_id": target, "reason": "yes: wants sales"},
            {"type": "session_closed", "reason": "agent_transfer"},
        ]
    assert (await transcript(stack, user, s.conversation_id))["end_reason"] == "agent_transfer"

    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": "no"})
        events = await s.until("session_closed")
        assert events == [
            {"type": "text_full", "content": "OK, bye."},
            {"type": "session_closed", "reason": "script_terminate"},
        ]
    conv = await transcript(stack, user, s.conversation_id)
    assert (conv["end_reason"], conv.get("summary")) == ("script_terminate", "declined")


async def test_the_documented_python_client_talks_to_a_live_agent(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    token = await client_token(stack, await api_key(stack, user), agent)
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "realtime_client.py"
    argv = [sys.executable, str(example), "--url", stack.gateway_url, "--token", token, "--agent", agent]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--say",
        "hello there",
        "--say",
        "bye",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "agent: Hi, I am listening.",
        "you: hello there",
        'You said: "hello there".',
        "you: bye",
        'You said: "bye".',
        "agent: Bye!",
        "[session closed: flow_end]",
    ]


async def test_credentials_and_handshake_errors(stack: Stack) -> None:
    owner, stranger = await signup(stack), await signup(stack)
    nodes, edges = chat_agent()
    live = await make_agent(stack, owner, nodes, edges)
    draft = await make_agent(stack, owner, nodes, edges, live=False)
    other = await make_agent(stack, owner, nodes, edges)
    key = await api_key(stack, owner)
    token = await client_token(stack, key, live)

    # Accepted: the session cookie, an API key, a client token for this agent; a draft for its owner.
    for kwargs in ({"cookie": owner.cookie}, {"token": key}, {"token": token}):
        async with session(stack, live, **kwargs) as s:  # type: ignore[arg-type]
            assert (await s.until("turn_complete"))[0]["content"] == "Hi, I am listening."
            await s.send({"type": "end"})
            assert await s.closed() == "client_end"
    async with session(stack, draft, cookie=owner.cookie) as s:
        await s.until("turn_complete")

    refusals = [
        ({}, live, "auth.unauthenticated"),
        ({"token": "not-a-credential"}, live, "auth.unauthenticated"),
        ({"cookie": owner.cookie}, str(uuid.uuid4()), "resource.not_found"),
        ({"cookie": stranger.cookie}, draft, "resource.not_found"),
        ({"token": token}, other, "realtime.token_scope_mismatch"),
    ]
    for kwargs, agent, reason in refusals:
        async with session(stack, agent, expect_error=True, **kwargs) as s:  # type: ignore[arg-type]
            assert s.events == [{"type": "handshake_error", "reason": reason}]
            with pytest.raises(ConnectionClosed) as closed:
                await s.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400

    async def first_reply(frame: str | bytes | None) -> dict[str, Any]:
        async with connect(
            stack.gateway_url, additional_headers={"Cookie": f"kivox_session={owner.cookie}"}
        ) as ws:
            if frame is not None:
                await ws.send(frame)
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return reply

    assert await first_reply(json.dumps({"type": "input_text", "text": "hi"})) == {
        "type": "handshake_error",
        "reason": "realtime.handshake_required",
    }
    assert (await first_reply(b"\x00\x01"))["reason"] == "realtime.handshake_required"
    assert (await first_reply(None))["reason"] == "realtime.handshake_timeout"

    # Nobody but the owner resumes a conversation.
    async with session(stack, live, cookie=owner.cookie) as s:
        await s.until("turn_complete")
        async with session(
            stack, live, cookie=stranger.cookie, resume=(s.conversation_id, 0), expect_error=True
        ) as intruder:
            assert intruder.events == [{"type": "handshake_error", "reason": "realtime.session_not_found"}]


async def test_client_token_data_becomes_session_variables(stack: Stack) -> None:
    owner = await signup(stack)
    nodes = [
        node(
            "start",
            "CONTROL.START",
            greeting="Hello {{ customer_name }}!",
            variables={"customer_name": "stranger"},
        ),
        node("end", "CONTROL.END"),
    ]
    agent = await make_agent(stack, owner, nodes, [edge("start", "end")])
    key = await api_key(stack, owner)
    named = await client_token(stack, key, agent, data={"customer_name": "John"})
    async with session(stack, agent, token=named) as s:
        greeting = next(e for e in await s.until("flow_complete") if e["type"] == "text_full")
        assert greeting["content"] == "Hello John!"
    # Without data the blueprint's own default stands.
    async with session(stack, agent, token=await client_token(stack, key, agent)) as s:
        greeting = next(e for e in await s.until("flow_complete") if e["type"] == "text_full")
        assert greeting["content"] == "Hello stranger!"


async def test_bad_frames_get_precise_errors_and_the_session_lives_on(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")

        async def error_for(*frames: str | bytes | dict[str, Any]) -> dict[str, Any]:
            for frame in frames:
                await s.send(frame)
            while True:
                event = await s.recv()
                assert event["type"] == "error", event
                assert set(event) == {"type", "code", "message"} and event["message"]
                if event["code"] != "realtime.rate_limited":
                    return event

        assert (await error_for("not json"))["code"] == "realtime.invalid_json"
        assert (await error_for("[1, 2]"))["code"] == "realtime.invalid_json"
        assert (await error_for({"type": "shout"}))["code"] == "realtime.unknown_type"
        assert (await error_for({"text": "no type"}))["code"] == "realtime.unknown_type"
        missing = await error_for({"type": "input_text"})
        assert missing["code"] == "realtime.invalid_frame" and "text" in missing["message"]
        assert (await error_for({"type": "input_text", "text": 42}))["code"] == "realtime.invalid_frame"
        assert (await error_for({"type": "input_text", "text": "a\u0000b"}))[
            "code"
        ] == "realtime.invalid_frame"
        assert (await error_for(b"\x01\x02"))["code"] == "realtime.unexpected_binary"
        oversized = await error_for({"type": "input_text", "text": "x" * 5000})
        assert oversized["code"] == "realtime.frame_too_large" and "4096" in oversized["message"]
        too_big_audio = await error_for({"type": "input_audio_stream"}, b"\x00" * 70_000)
        assert too_big_audio["code"] == "realtime.frame_too_large"
        again = await error_for({"type": "handshake", "agent_id": agent})
        assert again["code"] == "realtime.already_started"
        # input_audio_stream announces exactly one binary frame: the second one is unexpected.
        audio = await error_for({"type": "input_audio_stream"}, b"\x01" * 64)
        assert audio["code"] == "realtime.audio_unsupported"  # a text session takes no audio
        assert (await error_for(b"\x01" * 64))["code"] == "realtime.unexpected_binary"

        # Over the input rate (burst 30, 50/s): frames are dropped, each one reported.
        for _ in range(45):
            await s.send({"type": "cancel"})
        await asyncio.sleep(0.8)  # let the bucket refill, then a marker frame ends the count
        marker = await error_for({"type": "shout"})
        limited = [e for e in s.events if e.get("code") == "realtime.rate_limited"]
        assert marker["code"] == "realtime.unknown_type"
        assert len(limited) >= 5, len(limited)

        # After all that, the session works as before.
        answer = await s.say("still there?")
        assert text_of(answer) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"


async def test_cancel_stops_the_answer_within_200ms(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        before = [await s.recv() for _ in range(3)]
        assert kinds(before) == ["text_delta"] * 3
        sent = time.monotonic()
        await s.send({"type": "cancel"})
        rest = await s.until("turn_complete")
        assert time.monotonic() - sent < 0.2
        partial = text_of(before + rest)
        full = f'You said: "{LONG}".'
        assert full.startswith(partial) and len(partial) < len(full) // 2
        # The turn ended cleanly: the next one is answered in full.
        assert text_of(await s.say("again")) == 'You said: "again".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["messages"][1:] == [
        ("user", LONG),
        ("assistant", partial),  # what the user saw, not what the model would have said
        ("user", "again"),
        ("assistant", 'You said: "again".'),
    ]


async def test_interruptions_when_the_agent_allows_them(stack: Stack) -> None:
    user = await signup(stack)
    patient = await make_agent(stack, user, *chat_agent())
    eager = await make_agent(stack, user, *chat_agent(), allow_interruptions=True)
    full = f'You said: "{LONG}".'
    for agent, interrupted in ((patient, False), (eager, True)):
        async with session(stack, agent, cookie=user.cookie) as s:
            await s.until("turn_complete")
            await s.send({"type": "input_text", "text": LONG})
            early = [await s.recv() for _ in range(2)]
            await s.send({"type": "input_text", "text": "wait"})
            if not interrupted:
                await s.send({"type": "input_text", "text": "and this"})
            answered = text_of(early + await s.until("turn_complete"))
            # Without interruptions new messages wait for the answer, then are taken in order;
            # with them a new message cuts the answer.
            if interrupted:
                assert full.startswith(answered) and len(answered) < len(full) // 2
            else:
                assert answered == full
            assert text_of(await s.until("turn_complete")) == 'You said: "wait".'
            if not interrupted:
                assert text_of(await s.until("turn_complete")) == 'You said: "and this".'


async def test_silence_and_duration_timeouts_with_ticks(stack: Stack) -> None:
    user = await signup(stack)
    silent = await make_agent(stack, user, *chat_agent(), max_silence_timeout_seconds=2.5)
    async with session(stack, silent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        assert await s.closed(timeout=10) == "timeout"
        assert s.ticks, "no tick before the silence timeout"
        assert all(set(t) == {"type", "remaining_ms", "elapsed_ms"} for t in s.ticks)
        assert all(0 <= t["remaining_ms"] <= 2500 for t in s.ticks)
        elapsed = [t["elapsed_ms"] for t in s.ticks]
        assert elapsed == sorted(elapsed) and elapsed[-1] >= 900
    assert (await transcript(stack, user, s.conversation_id))["end_reason"] == "timeout"

    # The session's maximum duration cuts even an answer that is streaming.
    short = await make_agent(stack, user, *chat_agent(), max_session_duration_minutes=0.015)  # 0.9 s
    async with session(stack, short, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})  # answered in ~1.3 s
        events = await s.until("session_closed", timeout=10)
        assert kinds(events)[0] == "text_delta" and "turn_complete" not in kinds(events)
        assert events[-1] == {"type": "session_closed", "reason": "timeout"}


async def test_dropped_socket_resumes_without_gap_then_closes_after_grace(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        for _ in range(4):
            await s.recv()
        seen = list(s.events)
    # The socket is gone mid-answer; the answer goes on into the stream.
    async with session(stack, agent, cookie=user.cookie, resume=(s.conversation_id, len(seen))) as again:
        assert again.conversation_id == s.conversation_id
        rest = await again.until("turn_complete")
    events = seen + rest
    assert kinds(events) == ["text_full", "turn_complete"] + ["text_delta"] * (len(events) - 3) + [
        "turn_complete"
    ]
    assert text_of(events) == f'You said: "{LONG}".'

    # Gone for longer than the grace period: the runtime closes the session.
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["end_reason"] == "socket_shutdown"
    assert conv["messages"][1:] == [("user", LONG), ("assistant", f'You said: "{LONG}".')]
    # A late reconnect still gets what it missed, ending with session_closed.
    async with session(stack, agent, cookie=user.cookie, resume=(s.conversation_id, len(events))) as late:
        assert await late.closed() == "socket_shutdown"


async def test_worker_killed_mid_answer(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        for _ in range(5):
            assert (await s.recv())["type"] == "text_delta"
        owner = await stack.redis_text(f"parley:rt:session:{s.conversation_id}:owner")
        (victim,) = [w for w in stack.alive_workers() if w.pid is not None and f"-{w.pid}-" in owner]
        victim.signal(signal.SIGKILL)
        started = time.monotonic()
        rest = await s.until("turn_complete", timeout=ACK_WAIT_S + 10)
        took_over = time.monotonic() - started

        # The partial answer is disowned, then the answer comes again, whole, from another worker.
        restart = kinds(rest).index("error")
        assert rest[restart]["code"] == "realtime.turn_restarted"
        assert text_of(rest[restart + 1 :]) == f'You said: "{LONG}".'
        assert all(k == "text_delta" for k in kinds(rest[restart + 1 : -1]))
        new_owner = await stack.redis_text(f"parley:rt:session:{s.conversation_id}:owner")
        assert new_owner != owner
        assert took_over >= ACK_WAIT_S * 0.5  # it was JetStream's redelivery, not the dead worker

        # The session goes on normally on its new worker.
        assert text_of(await s.say("still there?")) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"

    conv = await transcript(stack, user, s.conversation_id)
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", LONG),
        ("assistant", f'You said: "{LONG}".'),
        ("user", "still there?"),
        ("assistant", 'You said: "still there?".'),
    ]
    stack.start_worker()  # back to two workers for whatever runs next
    await asyncio.to_thread(stack.workers[-1].wait_ready, 60)


async def test_a_stopping_worker_finishes_its_turn_then_hands_the_session_over(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    owner_key = "parley:rt:session:{}:owner"
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        assert (await s.recv())["type"] == "text_delta"
        owner = await stack.redis_text(owner_key.format(s.conversation_id))
        (worker,) = [w for w in stack.alive_workers() if w.pid is not None and f"-{w.pid}-" in owner]
        worker.signal(signal.SIGTERM)
        await s.send({"type": "input_text", "text": "said during the drain"})
        # Draining: the running answer is finished by the same worker, nothing is replayed.
        rest = await s.until("turn_complete")
        ended = time.monotonic()
        assert "error" not in kinds(rest)
        assert text_of(s.events[-len(rest) - 1 :]) == f'You said: "{LONG}".'
        # The message that came during the drain is left for, and answered by, the next owner.
        assert text_of(await s.until("turn_complete")) == 'You said: "said during the drain".'

        async def new_owner() -> str | None:
            raw = await stack.redis.get(owner_key.format(s.conversation_id))
            return raw.decode() if isinstance(raw, bytes) and raw.decode() != owner else None

        await eventually(new_owner, what="another worker taking the session over")
        # Handed back at once (a nak), not after the claim's ack_wait ran out.
        assert time.monotonic() - ended < ACK_WAIT_S
        assert text_of(await s.say("still there?")) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    # A clean exit (uvicorn ends by re-raising the SIGTERM it handled).
    assert worker.proc is not None and await asyncio.to_thread(worker.proc.wait, 30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (stack.logs / f"{worker.name}.log").read_text()
    conv = await transcript(stack, user, s.conversation_id)
    assert [role for role, _ in conv["messages"]] == ["assistant"] + ["user", "assistant"] * 3
    stack.start_worker()
    await asyncio.to_thread(stack.workers[-1].wait_ready, 60)
