"""Revocation reaches open connections (docs/realtime.md, docs/chat-ws.md), over the real stack.

test_realtime's stack plus two more session-gateway processes: `a` (the stack's own) and `b` are
replicas with the default 30 s re-verification backstop, so whatever closes their sockets within
1 s is the `auth.events.revoked` event, which every replica receives; `c` re-verifies every 0.3 s,
for the event that never arrives. For each way to revoke a credential (an API key, with the
client tokens it minted; one logout; logging out everywhere; a password reset; deleting the
account) every open connection of it must close within 1 s, measured from the moment the
revoking request is sent: `/realtime` with `error` `auth.credential_revoked`, `session_closed`
`user_exit` and close 4401, `/chat/ws` with `message-error`, `session-closed` and close 4401, an
Octavus trigger stream with an `error` event and `[DONE]`. Every other connection, of the same
user and of another one, goes on answering.
"""

from __future__ import annotations

import asyncio
import email
import functools
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from tests.e2e.harness import (
    Session,
    Stack,
    User,
    api_key,
    chat_agent,
    client_token,
    make_agent,
    ready,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    text_of,
    transcript,
)
from tests.e2e.test_chat_ws import Chat
from tests.e2e.test_octavus_sessions import FAKE_KEY, Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley_devstack.servers import ManagedProcess, free_port

from .llm_fakes import FakeAnthropic, Pause, anthropic_text

WITHIN_S = 1.0  # every connection of a revoked credential closes this soon
REVERIFY_S = 0.3  # gateway c's backstop interval


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=FAKE_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def stack_env(fake: FakeAnthropic) -> dict[str, str]:
    return {"PARLEY_LLM_ANTHROPIC_BASE_URL": fake.base_url, "PARLEY_LLM_ANTHROPIC_API_KEY": FAKE_KEY}


@dataclass
class Gateways:
    a: str  # ws://host:port, no path
    b: str
    c: str


@pytest.fixture(scope="module")
async def gateways(stack: Stack) -> AsyncIterator[Gateways]:  # noqa: F811 - the fixture above
    procs = []
    for name, extra in (("b", {}), ("c", {"PARLEY_GATEWAY_REVERIFY_INTERVAL_S": str(REVERIFY_S)})):
        port = free_port()
        proc = ManagedProcess(
            f"gateway-{name}",
            [sys.executable, "-m", "parley_session_gateway"],
            env={**stack.env, "PARLEY_HTTP_PORT": str(port), **extra},
            log_path=stack.logs / f"gateway-{name}.log",
        )
        proc.probe = functools.partial(ready, port)  # type: ignore[method-assign]
        proc.start()
        procs.append((proc, port))
    try:
        for proc, _ in procs:
            await asyncio.to_thread(proc.wait_ready, 60)
        a = stack.gateway_url.removesuffix("/realtime")
        yield Gateways(a=a, b=f"ws://127.0.0.1:{procs[0][1]}", c=f"ws://127.0.0.1:{procs[1][1]}")
    finally:
        for proc, _ in procs:
            await asyncio.to_thread(proc.stop, 10)


# ------------------------------------------------------------------------------------ connections


@dataclass
class Ending:
    events: list[dict[str, Any]]  # what arrived after the revocation, ticks and heartbeats aside
    code: int
    reason: str
    after_s: float  # from the revoking request to the close


async def realtime(
    sockets: AsyncExitStack, base: str, agent: str, *, cookie: str | None = None, token: str | None = None
) -> Session:
    """An open `/realtime` session past its greeting."""
    url = f"{base}/realtime" + (f"?token={token}" if token else "")
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {}
    ws = await sockets.enter_async_context(connect(url, additional_headers=headers))
    s = Session(ws)
    await s.send({"type": "handshake", "agent_id": agent})
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["type"] == "handshake_ok", reply
    s.conversation_id = reply["conversation_id"]
    await s.until("turn_complete")
    return s


async def chat(sockets: AsyncExitStack, base: str, token: str) -> Chat:
    """An open `/chat/ws` session past its greeting."""
    ws = await sockets.enter_async_context(connect(f"{base}/chat/ws?token={token}"))
    c = Chat(ws)
    hello = await c.recv()
    assert hello["type"] == "connected", hello
    c.session_id = hello["session_id"]
    await c.until("response-end")
    return c


async def ending(conn: Session | Chat, started: float, within: float = WITHIN_S) -> Ending:
    """Everything the connection gets until the server closes it, at most `within` seconds after
    `started` (a deadline, not a sleep: it returns as soon as the socket closes)."""
    events: list[dict[str, Any]] = []
    try:
        while True:
            left = started + within - time.monotonic()
            if left <= 0:
                raise AssertionError(f"still open {within}s after the revocation; got {events}")
            try:
                events.append(await conn.recv(left))
            except TimeoutError:
                continue
    except ConnectionClosed as closed:
        after = time.monotonic() - started
        assert closed.rcvd is not None, "closed without a close frame"
        return Ending(events, closed.rcvd.code, closed.rcvd.reason, after)


def assert_realtime_revoked(end: Ending) -> None:
    assert end.events[-2:] == [
        {"type": "error", "code": "auth.credential_revoked", "message": "The credential has been revoked."},
        {"type": "session_closed", "reason": "user_exit"},
    ], end.events
    assert (end.code, end.reason) == (4401, "auth.credential_revoked")


def assert_chat_revoked(end: Ending, session_id: str) -> None:
    error, closed = end.events[-2:]
    assert error == {
        "type": "message-error",
        "id": None,
        "error": "auth.credential_revoked: The credential has been revoked.",
    }, end.events
    assert closed["type"] == "session-closed" and "seq" not in closed
    assert (closed["session_id"], closed["status"], closed["reason"]) == (
        session_id,
        "completed",
        "user_exit",
    )
    assert (end.code, end.reason) == (4401, "auth.credential_revoked")


async def all_end(conns: list[Session | Chat], started: float) -> list[Ending]:
    return list(await asyncio.gather(*(ending(c, started) for c in conns)))


async def still_answers(conn: Session | Chat) -> None:
    if isinstance(conn, Session):
        assert text_of(await conn.say("still there?")) == 'You said: "still there?".'
    else:
        # A fresh id each time: the gateway stores a message once per id (a resend is not answered).
        events = await conn.message("still there?", f"probe-{uuid.uuid4().hex[:8]}")
        assert events[-1] == {
            "type": "response-end",
            "content": 'You said: "still there?".',
            "seq": events[-1]["seq"],
        }


# ------------------------------------------------------------------------------------ people


def auth_http(stack: Stack, *, cookie: str | None = None, key: str | None = None) -> httpx.AsyncClient:  # noqa: F811
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {"Authorization": f"Bearer {key}"}
    return stack.http(stack.auth, headers=headers)


async def login(stack: Stack, email_address: str, password: str) -> str:  # noqa: F811
    async with stack.http(stack.auth) as http:
        resp = await http.post("/auth/sessions", json={"email": email_address, "password": password})
    assert resp.status_code == 201, resp.text
    return str(resp.cookies["kivox_session"])


async def email_of(stack: Stack, user: User) -> str:  # noqa: F811
    async with auth_http(stack, cookie=user.cookie) as http:
        return str((await http.get("/users/me")).json()["email"])


async def mint_chat(stack: Stack, key: str, agent: str) -> str:  # noqa: F811
    async with auth_http(stack, key=key) as http:
        resp = await http.post("/chat/tokens", json={"workflow_id": agent})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


# ------------------------------------------------------------------------------------ the tests


async def test_a_revoked_key_closes_every_socket_it_opened_or_minted_and_nothing_else(
    stack: Stack,  # noqa: F811
    gateways: Gateways,
) -> None:
    alice, bob = await signup(stack), await signup(stack)
    agent = await make_agent(stack, alice, *chat_agent())
    bob_agent = await make_agent(stack, bob, *chat_agent())
    key, other_key, bob_key = (
        await api_key(stack, alice),
        await api_key(stack, alice),
        await api_key(stack, bob),
    )
    async with AsyncExitStack() as sockets:
        doomed: list[Session | Chat] = [
            await realtime(sockets, gateways.a, agent, token=key),
            await realtime(sockets, gateways.b, agent, token=key),  # another replica
            await realtime(sockets, gateways.b, agent, token=await client_token(stack, key, agent)),
            await chat(sockets, gateways.a, await mint_chat(stack, key, agent)),
        ]
        spared: list[Session | Chat] = [
            await realtime(sockets, gateways.a, agent, token=other_key),
            await realtime(sockets, gateways.a, agent, token=await client_token(stack, other_key, agent)),
            await realtime(sockets, gateways.b, bob_agent, token=bob_key),
            await chat(sockets, gateways.a, await mint_chat(stack, bob_key, bob_agent)),
        ]
        revoked_id = (await _key_ids(stack, alice))[0]
        started = time.monotonic()
        async with auth_http(stack, cookie=alice.cookie) as http:
            assert (await http.delete(f"/auth/api-keys/{revoked_id}")).status_code == 204
        ends = await all_end(doomed, started)
        for end in ends[:3]:
            assert_realtime_revoked(end)
        chat_conn = doomed[3]
        assert isinstance(chat_conn, Chat)
        assert_chat_revoked(ends[3], chat_conn.session_id)
        for conn in spared:
            await still_answers(conn)
    # The session ended with the socket: the transcript says so.
    first = doomed[0]
    assert isinstance(first, Session)
    assert (await transcript(stack, alice, first.conversation_id))["end_reason"] == "user_exit"


async def _key_ids(stack: Stack, user: User) -> list[str]:  # noqa: F811
    """The user's live keys, oldest first."""
    async with auth_http(stack, cookie=user.cookie) as http:
        resp = await http.get("/auth/api-keys")
    assert resp.status_code == 200, resp.text
    return [str(k["id"]) for k in resp.json()]


async def test_a_logout_closes_the_sockets_of_that_cookie_only(stack: Stack, gateways: Gateways) -> None:  # noqa: F811
    alice = await signup(stack)
    agent = await make_agent(stack, alice, *chat_agent())
    address = await email_of(stack, alice)
    second = await login(stack, address, "correct horse battery")
    async with AsyncExitStack() as sockets:
        doomed = [
            await realtime(sockets, gateways.a, agent, cookie=alice.cookie),
            await realtime(sockets, gateways.b, agent, cookie=alice.cookie),
        ]
        spared: list[Session | Chat] = [
            await realtime(sockets, gateways.a, agent, cookie=second),
            await realtime(sockets, gateways.b, agent, token=await api_key(stack, alice)),
        ]
        started = time.monotonic()
        async with auth_http(stack, cookie=alice.cookie) as http:
            assert (await http.delete("/auth/sessions/me")).status_code == 204
        for end in await all_end(list(doomed), started):
            assert_realtime_revoked(end)
        for conn in spared:
            await still_answers(conn)


async def test_logging_out_everywhere_and_a_password_reset_close_every_cookie_socket(
    stack: Stack,  # noqa: F811
    gateways: Gateways,
) -> None:
    alice = await signup(stack)
    agent = await make_agent(stack, alice, *chat_agent())
    address = await email_of(stack, alice)
    key = await api_key(stack, alice)
    async with AsyncExitStack() as sockets:
        spared: list[Session | Chat] = [
            await realtime(sockets, gateways.a, agent, token=key),
            await chat(sockets, gateways.b, await mint_chat(stack, key, agent)),
        ]
        second = await login(stack, address, "correct horse battery")
        doomed = [
            await realtime(sockets, gateways.a, agent, cookie=alice.cookie),
            await realtime(sockets, gateways.b, agent, cookie=second),
        ]
        started = time.monotonic()
        async with auth_http(stack, cookie=second) as http:
            assert (await http.delete("/auth/sessions")).status_code == 204
        for end in await all_end(list(doomed), started):
            assert_realtime_revoked(end)
        for conn in spared:
            await still_answers(conn)

        # A password reset: the sessions opened before it end; keys and their tokens live on.
        third = await login(stack, address, "correct horse battery")
        doomed = [await realtime(sockets, gateways.b, agent, cookie=third)]
        reset_token = await _reset_token(stack, address)
        started = time.monotonic()
        async with stack.http(stack.auth) as http:
            body = {"token": reset_token, "password": "a brand new password"}
            assert (await http.post("/auth/password/reset", json=body)).status_code == 204
        assert_realtime_revoked((await all_end(list(doomed), started))[0])
        for conn in spared:
            await still_answers(conn)


async def _reset_token(stack: Stack, address: str) -> str:  # noqa: F811
    async with stack.http(stack.auth) as http:
        assert (await http.post("/auth/password/recover", json={"email": address})).status_code == 204
    deadline = time.monotonic() + 10
    while True:
        for path in sorted(stack.mail_dir.glob("*.eml")):
            mail = email.message_from_bytes(path.read_bytes())
            if mail["To"] == address:
                body = mail.get_payload(decode=True)
                assert isinstance(body, bytes)
                found = re.search(r"token=([\w-]+)", body.decode())
                assert found is not None
                return found.group(1)
        assert time.monotonic() < deadline, "no reset mail"
        await asyncio.sleep(0.05)


async def test_deleting_the_account_closes_every_socket_of_it(stack: Stack, gateways: Gateways) -> None:  # noqa: F811
    alice, bob = await signup(stack), await signup(stack)
    agent = await make_agent(stack, alice, *chat_agent())
    bob_agent = await make_agent(stack, bob, *chat_agent())
    key = await api_key(stack, alice)
    async with AsyncExitStack() as sockets:
        doomed: list[Session | Chat] = [
            await realtime(sockets, gateways.a, agent, cookie=alice.cookie),
            await realtime(sockets, gateways.b, agent, token=key),
            await realtime(sockets, gateways.a, agent, token=await client_token(stack, key, agent)),
            await chat(sockets, gateways.b, await mint_chat(stack, key, agent)),
        ]
        spared = [await realtime(sockets, gateways.a, bob_agent, cookie=bob.cookie)]
        started = time.monotonic()
        async with auth_http(stack, cookie=alice.cookie) as http:
            assert (await http.delete("/users/me")).status_code == 204
        ends = await all_end(doomed, started)
        for end in ends[:3]:
            assert_realtime_revoked(end)
        assert isinstance(doomed[3], Chat)
        assert_chat_revoked(ends[3], doomed[3].session_id)
        await still_answers(spared[0])


async def test_a_lost_revocation_event_is_caught_by_reverification(stack: Stack, gateways: Gateways) -> None:  # noqa: F811
    """The key is revoked in auth's database without an event (as when auth could not publish it):
    gateway c's re-verification ends its connections within its interval plus the cache TTL."""
    alice = await signup(stack)
    agent = await make_agent(stack, alice, *chat_agent())
    key = await api_key(stack, alice)
    async with AsyncExitStack() as sockets:
        doomed: list[Session | Chat] = [
            await realtime(sockets, gateways.c, agent, token=key),
            await chat(sockets, gateways.c, await mint_chat(stack, key, agent)),
        ]
        (revoked_id,) = await _key_ids(stack, alice)
        db = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            started = time.monotonic()
            await db.execute(
                "UPDATE auth.api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(revoked_id)
            )
        finally:
            await db.close()
        # At most: the interval, then the AuthClient cache (1 s) still holding the key as valid.
        ends = [await ending(conn, started, REVERIFY_S + 1.0 + WITHIN_S) for conn in doomed]
        assert_realtime_revoked(ends[0])
        assert isinstance(doomed[1], Chat)
        assert_chat_revoked(ends[1], doomed[1].session_id)


async def test_a_revoked_key_ends_its_octavus_stream(
    stack: Stack,  # noqa: F811
    gateways: Gateways,
    fake: FakeAnthropic,
) -> None:
    alice = await signup(stack)
    key = await api_key(stack, alice)
    client = Client(stack, key)
    agent = await client.create_agent()
    session_id = await client.create_session(agent, {"COMPANY": "Acme", "USER_ID": "u-1"})
    reply = anthropic_text(["The first words ", "and the rest."])
    cut = next(i for i, step in enumerate(reply.steps) if b"The first words" in step) + 1
    reply.steps[cut:cut] = [Pause(30.0)]  # "Claude" stops mid-answer: the stream stays open
    fake.push(reply)
    trigger = {"triggerName": "user-message", "input": {"USER_MESSAGE": "Hello?"}}
    async with client.http.stream("POST", f"/api/agent-sessions/{session_id}/trigger", json=trigger) as resp:
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        async for line in lines:
            if line.startswith("data: ") and "text-delta" in line:
                break
        (revoked_id,) = await _key_ids(stack, alice)
        started = time.monotonic()
        async with auth_http(stack, cookie=alice.cookie) as http:
            assert (await http.delete(f"/auth/api-keys/{revoked_id}")).status_code == 204
        rest: list[str] = []
        async with asyncio.timeout(WITHIN_S - (time.monotonic() - started)):
            async for line in lines:
                if line.startswith("data: "):
                    rest.append(line.removeprefix("data: "))
    assert rest[-1] == "[DONE]", rest
    error = json.loads(rest[-2])
    assert error["type"] == "error" and error["code"] == "auth.credential_revoked", error
    assert error["errorType"] == "authentication_error" and error["retryable"] is False
    await client.http.aclose()
