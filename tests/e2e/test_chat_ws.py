# One piece (476 lines): the chat WebSocket protocol end to end over one module-scoped stack; its
# cases share that stack and the protocol client defined here.
"""The chat WebSocket (`/chat/ws`, docs/chat-ws.md) end to end, over test_realtime's stack.

A second gateway process joins that stack with short chat timers: a heartbeat every 0.2 s, and an
expiry margin of 55 s with a refresh lead of 3 s. Client tokens live at least 60 s, so a token
minted with `ttl_seconds=60` gets `token-refresh-required` ~2 s after minting and its connection
ends ~5 s after minting unless refreshed: real expiries, measured against each token's `exp`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from tests.e2e.harness import (
    GRACE_S,
    LONG,
    Stack,
    api_key,
    chat_agent,
    make_agent,
    ready,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    transcript,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from parley_devstack.servers import ManagedProcess, free_port

HEARTBEAT_S = 0.2
MARGIN_S = 55.0  # a connection ends 55 s before its token's exp …
LEAD_S = 3.0  # … and is asked for a refresh 3 s before that
MAX_ARTIFACTS = 3
MAX_ARTIFACTS_BYTES = 512


@pytest.fixture(scope="module")
async def chat_url(stack: Stack) -> AsyncIterator[str]:  # noqa: F811 - the fixture above
    port = free_port()
    proc = ManagedProcess(
        "gateway-chat",
        [sys.executable, "-m", "parley_session_gateway"],
        env={
            **stack.env,
            "PARLEY_HTTP_PORT": str(port),
            "PARLEY_GATEWAY_CHAT_HEARTBEAT_S": str(HEARTBEAT_S),
            "PARLEY_GATEWAY_CHAT_EXPIRY_MARGIN_S": str(MARGIN_S),
            "PARLEY_GATEWAY_CHAT_REFRESH_LEAD_S": str(LEAD_S),
            "PARLEY_GATEWAY_CHAT_MAX_ARTIFACTS": str(MAX_ARTIFACTS),
            "PARLEY_GATEWAY_CHAT_MAX_ARTIFACTS_BYTES": str(MAX_ARTIFACTS_BYTES),
        },
        log_path=stack.logs / "gateway-chat.log",
    )
    proc.probe = lambda: ready(port)  # type: ignore[method-assign]
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready, 60)
        yield f"ws://127.0.0.1:{port}/chat/ws"
    finally:
        await asyncio.to_thread(proc.stop, 10)


@dataclass
class Token:
    token: str
    expires_at: float  # epoch seconds

    @property
    def deadline(self) -> float:
        """When the chat gateway of this module ends a connection holding only this token."""
        return self.expires_at - MARGIN_S


async def mint(stack: Stack, key: str, agent_id: str, ttl_seconds: int | None = None) -> Token:  # noqa: F811
    body: dict[str, Any] = {"workflow_id": agent_id}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    async with stack.http(stack.auth, headers={"Authorization": f"Bearer {key}"}) as http:
        resp = await http.post("/chat/tokens", json=body)
    assert resp.status_code == 201, resp.text
    expires = datetime.fromisoformat(resp.json()["expires_at"]).timestamp()
    return Token(token=str(resp.json()["token"]), expires_at=expires)


@dataclass
class Chat:
    """A raw chat protocol client; heartbeats are recorded apart (with their arrival times)."""

    ws: ClientConnection
    session_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[float] = field(default_factory=list)
    at: dict[str, float] = field(default_factory=dict)  # arrival time of the last event of each type

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            event: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if event["type"] == "heartbeat":
                self.heartbeats.append(time.monotonic())
                continue
            self.at[event["type"]] = time.time()
            self.events.append(event)
            return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            got.append(await self.recv(max(0.01, deadline - time.monotonic())))
            if got[-1]["type"] == kind:
                return got

    async def message(self, content: str, msg_id: str) -> list[dict[str, Any]]:
        """Send a message; the events up to its response's end."""
        await self.send({"type": "message", "content": content, "id": msg_id})
        return await self.until("response-end")

    async def closed(self, timeout: float = 10.0) -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await self.recv(timeout)
        assert info.value.rcvd is not None
        return info.value.rcvd.code, info.value.rcvd.reason


@asynccontextmanager
async def chat(url: str, token: str, resume: tuple[str, int] | None = None) -> AsyncIterator[Chat]:
    query = f"?token={token}"
    if resume is not None:
        query += f"&session_id={resume[0]}&last_event={resume[1]}"
    async with connect(url + query, max_size=None) as ws:
        c = Chat(ws)
        hello = await c.recv()
        assert hello["type"] == "connected", hello
        c.session_id = hello["session_id"]
        yield c


async def setup(stack: Stack) -> tuple[Any, str, str]:  # noqa: F811
    user = await signup(stack)
    key = await api_key(stack, user)
    return user, key, await make_agent(stack, user, *chat_agent())


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def numbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session events (those with a `seq`: the resume position)."""
    return [e for e in events if "seq" in e]


# ------------------------------------------------------------------------------------ the tests


async def test_message_streamed_response_acks_and_session_closed(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    token = await mint(stack, key, agent)
    async with chat(chat_url, token.token) as c:
        greeting = await c.until("response-end")
        assert kinds(greeting)[0] == "response-start" and greeting[0]["content"] == ""
        assert greeting[-1]["content"] == "Hi, I am listening."

        turn = await c.message("hello there", "m-1")
        assert turn[0] == {"type": "message-ack", "id": "m-1", "message": "hello there"}
        assert kinds(turn)[1] == "response-start"
        chunks = [e["content"] for e in turn if e["type"] == "response-chunk"]
        assert len(chunks) > 1 and "".join(chunks) == turn[-1]["content"] != ""

        await c.send({"type": "message", "content": "bye", "id": "m-2"})
        events = await c.until("session-closed")
        assert events[0] == {"type": "message-ack", "id": "m-2", "message": "bye"}
        assert [e["content"] for e in events if e["type"] == "response-end"] == ["Bye!"]
        closed = events[-1]
        assert closed["session_id"] == c.session_id
        assert (closed["status"], closed["reason"]) == ("completed", "flow_end")
        assert 0 < closed["duration"] < 30
        assert abs(datetime.fromisoformat(closed["timestamp"]).timestamp() - time.time()) < 5
        await c.closed()
    conv = await transcript(stack, user, c.session_id)
    assert ("user", "hello there") in conv["messages"] and ("user", "bye") in conv["messages"]


async def test_only_chat_client_tokens_connect(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, _ = await setup(stack)
    for query in ("", f"?token={key}", "?token=not-a-token"):
        async with connect(chat_url + query) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
        if query != "?token=not-a-token":
            assert info.value.rcvd.reason == "chat.token_required"


async def test_bad_frames_get_message_errors_and_the_connection_lives_on(
    stack: Stack,  # noqa: F811
    chat_url: str,
) -> None:
    _, key, agent = await setup(stack)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        await c.until("response-end")
        await c.send("not json")
        assert await c.recv() == {
            "type": "message-error",
            "id": None,
            "error": "realtime.invalid_json: The frame is not a JSON object.",
        }
        await c.send({"type": "shout", "id": "x-1"})
        error = await c.recv()
        assert error["id"] == "x-1" and error["error"].startswith("realtime.unknown_type")
        await c.send({"type": "message", "id": "x-2"})
        error = await c.recv()
        assert error["id"] == "x-2" and "content: Field required" in error["error"]
        await c.send({"type": "message", "content": "   ", "id": "x-3"})
        error = await c.recv()
        assert error["id"] == "x-3" and "content: must not be empty" in error["error"]
        turn = await c.message("still here?", "x-4")
        assert turn[0]["type"] == "message-ack" and turn[0]["id"] == "x-4"


async def test_heartbeat_cadence(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, agent = await setup(stack)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        await c.until("response-end")
        while len(c.heartbeats) < 6:  # nothing but heartbeats in the meantime
            frame = json.loads(await asyncio.wait_for(c.ws.recv(), 2))
            assert frame == {"type": "heartbeat"}, frame
            c.heartbeats.append(time.monotonic())
    gaps = [b - a for a, b in zip(c.heartbeats, c.heartbeats[1:], strict=False)]
    assert len(gaps) >= 4, c.heartbeats
    assert all(0.1 < g < 0.5 for g in gaps), gaps


async def test_refresh_moves_the_expiry(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, agent = await setup(stack)
    first = await mint(stack, key, agent, ttl_seconds=60)
    async with chat(chat_url, first.token) as c:
        await c.until("token-refresh-required")
        assert c.at["token-refresh-required"] >= first.deadline - LEAD_S - 0.5
        fresh = await mint(stack, key, agent, ttl_seconds=60)
        assert fresh.expires_at > first.expires_at
        await c.send({"type": "token-refresh", "token": fresh.token})
        ack = (await c.until("token-refresh-ack"))[-1]
        assert abs(datetime.fromisoformat(ack["expires_at"]).timestamp() - fresh.expires_at) < 0.01
        # The next notice and the backstop follow the new token, not the first one.
        await c.until("token-refresh-required")
        assert c.at["token-refresh-required"] >= fresh.deadline - LEAD_S - 0.5
        await c.until("token-expired")
        assert c.at["token-expired"] >= fresh.deadline - 0.5 > first.deadline
        code, reason = await c.closed()
    assert (code, reason) == (4401, "chat.token_expired")


async def test_refresh_with_another_scope_is_refused_and_the_old_token_expires(
    stack: Stack,  # noqa: F811
    chat_url: str,
) -> None:
    user, key, agent = await setup(stack)
    other_agent = await make_agent(stack, user, *chat_agent())
    first = await mint(stack, key, agent, ttl_seconds=60)
    async with chat(chat_url, first.token) as c:
        await c.until("token-refresh-required")
        other = await mint(stack, key, other_agent, ttl_seconds=60)
        await c.send({"type": "token-refresh", "token": other.token})
        error = (await c.until("token-refresh-error"))[-1]
        assert error["error"].startswith("chat.refresh_scope_mismatch")
        await c.send({"type": "token-refresh", "token": "garbage"})
        assert (await c.until("token-refresh-error"))[-1]["error"].startswith("auth.")
        # The old token is still in force: messages flow …
        turn = await c.message("are you there?", "s-1")
        assert turn[0] == {"type": "message-ack", "id": "s-1", "message": "are you there?"}
        # … until its own expiry, the backstop.
        await c.until("token-expired")
        assert first.deadline - 0.5 <= c.at["token-expired"] < first.deadline + 2
        code, reason = await c.closed()
    assert (code, reason) == (4401, "chat.token_expired")


async def test_connections_sharing_a_token_refresh_independently(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, agent = await setup(stack)
    shared = await mint(stack, key, agent, ttl_seconds=60)
    async with chat(chat_url, shared.token) as a, chat(chat_url, shared.token) as b:
        assert a.session_id != b.session_id
        await a.until("token-refresh-required")
        await b.until("token-refresh-required")
        fresh = await mint(stack, key, agent, ttl_seconds=60)
        await a.send({"type": "token-refresh", "token": fresh.token})
        await a.until("token-refresh-ack")
        # b never refreshed: it ends at the shared token's expiry …
        await b.until("token-expired")
        assert b.at["token-expired"] >= shared.deadline - 0.5
        assert await b.closed() == (4401, "chat.token_expired")
        # … while a lives on with its own token.
        assert time.time() < fresh.deadline
        turn = await a.message("still on?", "a-1")
        assert {"type": "message-ack", "id": "a-1", "message": "still on?"} in turn
        assert "token-expired" not in kinds(a.events)


async def test_bad_artifacts_are_refused_with_the_message_id(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, agent = await setup(stack)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        await c.until("response-end")
        bad: list[tuple[Any, str]] = [
            ({"name": "a.pdf"}, "artifacts: Input should be a valid list"),
            (["a.pdf"], "artifacts.0: Input should be a valid dictionary"),
            ([{"n": n} for n in range(MAX_ARTIFACTS + 1)], f"at most {MAX_ARTIFACTS} are accepted"),
            ([{"text": "x" * MAX_ARTIFACTS_BYTES}], f"at most {MAX_ARTIFACTS_BYTES} are accepted"),
            ([{"a": [[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]}], "artifacts.0: nested deeper than 16 levels"),
        ]
        for n, (artifacts, detail) in enumerate(bad):
            await c.send({"type": "message", "content": "look", "artifacts": artifacts, "id": f"a-{n}"})
            error = await c.recv()
            assert error["type"] == "message-error" and error["id"] == f"a-{n}", error
            assert error["error"].startswith("realtime.invalid_frame: Invalid message message: "), error
            assert detail in error["error"], error
        # Nothing of them reached the agent: the next message is answered as usual.
        turn = await c.message("still here?", "a-ok")
        assert turn[0] == {"type": "message-ack", "id": "a-ok", "message": "still here?"}
        assert turn[-1]["content"] == 'You said: "still here?".'


async def test_artifacts_reach_the_agent_with_the_message(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    artifacts = [
        {"type": "file", "name": "invoice.pdf", "pages": 2},
        {"type": "link", "url": "https://x.test"},
    ]
    encoded = json.dumps(artifacts, ensure_ascii=False)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        await c.until("response-end")
        await c.send({"type": "message", "content": "see attached", "artifacts": artifacts, "id": "f-1"})
        turn = await c.until("response-end")
        # The ack echoes the message as sent; the agent got the artifacts with it (the built-in
        # engine quotes what it got, whitespace collapsed).
        assert turn[0] == {"type": "message-ack", "id": "f-1", "message": "see attached"}
        assert turn[-1]["content"] == f'You said: "see attached <artifacts> {encoded} </artifacts>".'
        turn = await c.message("no artifacts now", "f-2")
        assert turn[-1]["content"] == 'You said: "no artifacts now".'
        await c.send({"type": "message", "content": "bye", "artifacts": [], "id": "f-3"})
        await c.until("session-closed")
    conv = await transcript(stack, user, c.session_id)
    assert ("user", f"see attached\n\n<artifacts>\n{encoded}\n</artifacts>") in conv["messages"]
    assert ("user", "bye") in conv["messages"]


async def test_dropped_socket_resumes_without_gap_or_duplicate(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        greeting = await c.until("response-end")
        assert [e["seq"] for e in greeting] == list(range(1, len(greeting) + 1))
        await c.send({"type": "message", "content": LONG, "id": "r-1"})
        while len([e for e in c.events if e["type"] == "response-chunk"]) < 4:
            await c.recv()
        seen = numbered(c.events)
    # The socket is gone mid-answer; the answer goes on into the stream. A new token of the same
    # scope resumes the session from the last event received.
    fresh = await mint(stack, key, agent)
    async with chat(chat_url, fresh.token, resume=(c.session_id, seen[-1]["seq"])) as again:
        assert again.session_id == c.session_id
        rest = await again.until("response-end")
        assert "response-chunk" in kinds(rest) and all("seq" in e for e in rest), rest
        events = seen + rest
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
        answer = events[len(greeting) :]
        assert kinds(answer) == ["response-start"] + ["response-chunk"] * (len(answer) - 2) + ["response-end"]
        assert "".join(e["content"] for e in answer[1:-1]) == answer[-1]["content"] == f'You said: "{LONG}".'
        # The resumed connection is the session's: it goes on as usual.
        turn = await again.message("and now?", "r-2")
        assert turn[0] == {"type": "message-ack", "id": "r-2", "message": "and now?"}
        assert turn[1]["seq"] == events[-1]["seq"] + 1 and turn[-1]["content"] == 'You said: "and now?".'
        await again.send({"type": "message", "content": "bye", "id": "r-3"})
        closed = (await again.until("session-closed"))[-1]
        assert (closed["session_id"], closed["status"], closed["reason"]) == (
            c.session_id,
            "completed",
            "flow_end",
        )
        assert closed["duration"] >= time.time() - c.at["response-end"]  # since the session started
        await again.closed()
    conv = await transcript(stack, user, c.session_id)
    assert [m for m in conv["messages"] if m[0] == "user"] == [
        ("user", LONG),
        ("user", "and now?"),
        ("user", "bye"),
    ]


async def test_a_resume_supersedes_a_connection_still_open(stack: Stack, chat_url: str) -> None:  # noqa: F811
    _, key, agent = await setup(stack)
    token = (await mint(stack, key, agent)).token
    async with chat(chat_url, token) as first:
        seen = numbered(await first.until("response-end"))
        async with chat(chat_url, token, resume=(first.session_id, seen[-1]["seq"])) as second:
            assert await first.closed() == (4409, "superseded by a newer connection")
            turn = await second.message("hello", "s-1")
            assert turn[0]["type"] == "message-ack" and turn[1]["seq"] == seen[-1]["seq"] + 1


async def test_resume_of_an_unknown_or_foreign_session_is_refused(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    async with chat(chat_url, (await mint(stack, key, agent)).token) as c:
        await c.until("response-end")
    other_agent = await make_agent(stack, user, *chat_agent())
    other = await mint(stack, key, other_agent)
    _, stranger_key, stranger_agent = await setup(stack)
    stranger = await mint(stack, stranger_key, stranger_agent)
    unknown = "00000000-0000-4000-8000-000000000000"
    for token, session_id in (
        (other, c.session_id),
        (stranger, c.session_id),
        (other, unknown),
        (other, "nope"),
    ):
        query = f"?token={token.token}&session_id={session_id}&last_event=3"
        async with connect(chat_url + query) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error == {
                "type": "message-error",
                "id": None,
                "error": f"realtime.session_not_found: No resumable session {session_id} for this caller.",
            }
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4404, "realtime.session_not_found")


async def test_resume_after_the_end_replays_what_was_missed_then_closes(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    token = (await mint(stack, key, agent)).token
    async with chat(chat_url, token) as c:
        seen = numbered(await c.until("response-end"))
        await c.send({"type": "message", "content": "bye", "id": "e-1"})
        await c.recv()  # the ack: gone before the answer
    conv = await transcript(stack, user, c.session_id)  # the flow ended without the client
    assert conv["end_reason"] == "flow_end"
    async with chat(chat_url, token, resume=(c.session_id, seen[-1]["seq"])) as late:
        rest = await late.until("session-closed")
        assert [e["seq"] for e in rest] == list(range(seen[-1]["seq"] + 1, seen[-1]["seq"] + len(rest) + 1))
        assert [e["content"] for e in rest if e["type"] == "response-end"] == ["Bye!"]
        assert (rest[-1]["status"], rest[-1]["reason"]) == ("completed", "flow_end")
        await late.closed()
    # Having seen everything, a resume gets the end again, and nothing else.
    async with chat(chat_url, token, resume=(c.session_id, rest[-1]["seq"])) as again:
        end = await again.recv()
        assert (end["type"], end["seq"], end["reason"]) == ("session-closed", rest[-1]["seq"], "flow_end")
        await again.closed()


async def test_a_session_left_longer_than_the_grace_period_ends(stack: Stack, chat_url: str) -> None:  # noqa: F811
    user, key, agent = await setup(stack)
    token = (await mint(stack, key, agent)).token
    async with chat(chat_url, token) as c:
        seen = numbered(await c.until("response-end"))
    await asyncio.sleep(GRACE_S + 0.5)
    conv = await transcript(stack, user, c.session_id)
    assert conv["end_reason"] == "socket_shutdown"
    async with chat(chat_url, token, resume=(c.session_id, seen[-1]["seq"])) as late:
        closed = await late.recv()
        assert closed["type"] == "session-closed" and closed["seq"] == seen[-1]["seq"] + 1
        assert closed["reason"] == "socket_shutdown"
        await late.closed()
