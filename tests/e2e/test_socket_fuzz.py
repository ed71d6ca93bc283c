"""Malformed frames over real sockets: each gets its precise error event and the session lives on.

test_realtime's stack, with the input rate limit out of the way (each frame here waits for its
answer, so a few hundred go by in seconds). Frames are drawn from the same strategies as the
parsers' property tests (services/session_gateway/tests/frame_strategies.py), deterministically,
so a failure here replays; every one must be answered with exactly the code its case names, and
afterwards the session still answers a valid message. Also: frames only the connection sees
(oversized text, binary where text or no audio is expected), and credentials longer than any auth
issues, which are refused like any unknown credential.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.e2e.harness import (
    Session,
    Stack,
    api_key,
    chat_agent,
    make_agent,
    session,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    text_of,
    transcript,
)
from tests.e2e.test_chat_ws import Chat
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley_common import subjects

from .frame_strategies import Case, chat_cases, kivox_cases

FRAMES = 300  # per protocol
MAX_TEXT = 4096  # PARLEY_GATEWAY_MAX_TEXT_FRAME_BYTES of test_realtime's stack


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"PARLEY_GATEWAY_INPUT_RATE_PER_S": "100000", "PARLEY_GATEWAY_INPUT_BURST": "100000"}


def draw(strategy: st.SearchStrategy[Case], n: int) -> list[Case]:
    """`n` cases of `strategy`, the same ones on every run."""
    cases: list[Case] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Case) -> None:
        cases.append(case)

    collect()
    return cases


# The frames of issue 10, item 7, always among them.
REGRESSIONS = [
    Case("[" * 1000 + "]" * 1000, "realtime.invalid_frame", "2 KB of nested arrays"),
    Case('{"type": "input_text", "text": "\\ud800"}', "realtime.invalid_frame", "a lone surrogate"),
]
CHAT_REGRESSIONS = [
    Case("[" * 1000 + "]" * 1000, "realtime.invalid_frame", "2 KB of nested arrays"),
    Case(
        '{"type": "message", "content": "\\ud800", "id": "s"}', "realtime.invalid_frame", "a lone surrogate"
    ),
]


def by_shape(cases: list[Case]) -> dict[str, int]:
    shapes: dict[str, int] = {}
    for case in cases:
        shapes[case.shape] = shapes.get(case.shape, 0) + 1
    return shapes


async def test_malformed_realtime_frames_each_get_their_error_and_the_session_lives_on(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    cases = REGRESSIONS + draw(kivox_cases(), FRAMES)
    assert len(by_shape(cases)) >= 15, by_shape(cases)  # every family of shapes is in the run
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        for case in cases:
            await s.send(case.frame)
            event = await s.recv()
            assert event["type"] == "error" and event["code"] == case.code, (case, event)
            assert event["message"]
        # What only the connection sees.
        too_large = await _answer(s, json.dumps({"type": "input_text", "text": "x" * MAX_TEXT}))
        assert too_large["code"] == "realtime.frame_too_large"
        assert (await _answer(s, b"\x00\xff binary"))["code"] == "realtime.unexpected_binary"

        assert text_of(await s.say("still there?")) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"


async def _answer(s: Session, frame: str | bytes) -> dict[str, Any]:
    await s.send(frame)
    event = await s.recv()
    assert event["type"] == "error", event
    return event


async def test_malformed_chat_frames_each_get_their_error_and_the_session_lives_on(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    key = await api_key(stack, user)
    agent = await make_agent(stack, user, *chat_agent())
    async with stack.http(stack.auth, headers={"Authorization": f"Bearer {key}"}) as http:
        token = (await http.post("/chat/tokens", json={"workflow_id": agent})).json()["token"]
    cases = CHAT_REGRESSIONS + draw(chat_cases(), FRAMES)
    assert len(by_shape(cases)) >= 15, by_shape(cases)
    chat_url = stack.gateway_url.removesuffix("/realtime") + "/chat/ws"
    async with connect(f"{chat_url}?token={token}") as ws:
        c = Chat(ws)
        assert (await c.recv())["type"] == "connected"
        await c.until("response-end")  # the greeting
        for case in cases:
            await c.send(case.frame)
            event = await c.recv()
            assert event["type"] == "message-error" and "seq" not in event, (case, event)
            assert event["error"].startswith(case.code + ": "), (case, event)
        await ws.send(b"\x00\xff binary")
        assert (await c.recv())["error"].startswith("realtime.invalid_json: ")
        await c.send(json.dumps({"type": "message", "content": "x" * MAX_TEXT}))
        assert (await c.recv())["error"].startswith("realtime.frame_too_large: ")

        answer = await c.message("still there?", "m-last")
        assert answer[0] == {"type": "message-ack", "id": "m-last", "message": "still there?"}
        assert answer[-1]["content"] == 'You said: "still there?".'


async def test_an_overlong_credential_is_refused_as_unauthenticated(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    long_token = "sk_live_" + "a" * 5000
    async with session(stack, agent, token=long_token, expect_error=True) as s:
        assert s.events == [{"type": "handshake_error", "reason": "auth.unauthenticated"}]
        with pytest.raises(ConnectionClosed) as closed:
            await s.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    jwt_like = "a" * 3000 + "." + "b" * 3000 + ".c"
    chat_url = stack.gateway_url.removesuffix("/realtime") + "/chat/ws"
    for token in (long_token, jwt_like):
        async with connect(f"{chat_url}?token={token}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "auth.unauthenticated")
    # The cookie path too.
    async with session(stack, agent, cookie="c" * 5000, expect_error=True) as s:
        assert s.events == [{"type": "handshake_error", "reason": "auth.unauthenticated"}]
    # Nothing of that reached the gateway's log as a failure.
    log = (stack.logs / "gateway.log").read_text()
    assert "handshake_failed" not in log and "chat.open_failed" not in log and "Traceback" not in log


async def test_garbage_on_a_session_input_subject_is_skipped_by_the_runtime(stack: Stack) -> None:  # noqa: F811
    """The runtime's side of client input (`session.<id>.in`, read by its input feed): whatever
    lands there that is not a valid input, from whichever publisher, is logged and skipped; the
    session goes on, and nothing of it reaches the transcript."""
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    stamp = {"at": "2026-01-01T00:00:00Z", "connection_id": "rogue"}
    garbage = [
        b"not json",
        b"[" * 5000,
        b"\xff\xfe\x00",
        json.dumps({"input": {**stamp, "type": "input_text", "text": "\ud800"}}).encode(),  # escaped
        json.dumps({"input": {**stamp, "type": "input_text", "text": "a\x00b"}}).encode(),
        json.dumps({"input": {**stamp, "type": "shout"}}).encode(),
        json.dumps({"input": {**stamp, "type": "end", "reason": "timeout"}}).encode(),
        json.dumps({"input": {**stamp, "type": "input_text", "text": 1e308}}).encode(),
    ]
    nc = await nats.connect(stack.env["NATS_URL"])
    try:
        async with session(stack, agent, cookie=user.cookie) as s:
            await s.until("turn_complete")
            for payload in garbage:
                await nc.jetstream().publish(subjects.session_in(s.conversation_id), payload)
            assert text_of(await s.say("still there?")) == 'You said: "still there?".'
            await s.send({"type": "end"})
            assert await s.closed() == "client_end"
    finally:
        await nc.close()
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["end_reason"] == "client_end"
    assert [m for m in conv["messages"] if m[0] == "user"] == [("user", "still there?")]
    logs = "".join((stack.logs / f"runtime-{n}.log").read_text() for n in (1, 2))
    assert logs.count("session.bad_input") >= len(garbage) and "session.crashed" not in logs
