"""`ChatConnection` and its output codec (`ChatOutput`) without a server: the test plays the chat
client on a `FakeSocket` and the runtime on a `FakeBridge` (session_fakes.py). Over real sockets
and services: tests/e2e/test_chat_ws.py and test_revocation.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from parley_common import session_contract as sc
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes
from parley_session_gateway.chat.codec import ChatOutput
from parley_session_gateway.chat.connection import ChatConnection
from parley_session_gateway.resume import Resume

from .session_fakes import AGENT, FakeAuth, FakeGateway, FakeSocket, connect, gateway, principal

TOKEN = "ct_chat_token"


def chat_token(**fields: Any) -> Principal:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    return principal(
        CredentialKind.CLIENT_TOKEN,
        **{"agent_id": AGENT, "token_type": "chat", "expires_at": expires, "org_id": uuid.uuid4(), **fields},
    )


@asynccontextmanager
async def chat(
    ctx: FakeGateway, auth: FakeAuth, token: Principal | None = None
) -> AsyncIterator[tuple[ChatConnection, FakeSocket]]:
    """A `/chat/ws` connection past its `connected`; it must end by the end of the block."""
    auth.principals[TOKEN] = token or chat_token()
    async with connect(ctx, ChatConnection, {"token": TOKEN}) as (conn, ws):
        connected = await ws.frame()
        assert connected == {"type": "connected", "session_id": str(ctx.last.conversation_id)}
        yield conn, ws


def kinds(frames: list[Any]) -> list[tuple[str, int | None]]:
    return [(frame.type, frame.seq) for frame in frames]


def test_the_output_codec_streams_numbers_and_skips_what_a_resume_has_seen() -> None:
    started = datetime.now(UTC) - timedelta(seconds=3)
    first = ChatOutput("s", started)
    events: list[sc.ServerEvent] = [
        sc.ServerTextDelta(chunk="Hel"),
        sc.ServerTextDelta(chunk="lo"),
        sc.ServerTurnComplete(),
        sc.ServerTextFull(content="Whole"),
        sc.ServerError(code="runtime.llm_failed", message="The model failed."),
        sc.ServerSessionClosed(reason=ConversationEndReason.TIMEOUT),
    ]
    made = [frame for event in events for frame in first.frames(event)]
    assert kinds(made) == [
        ("response-start", 1),
        ("response-chunk", 2),
        ("response-chunk", 3),
        ("response-end", 4),
        ("response-start", 5),
        ("response-chunk", 6),
        ("message-error", 7),
        ("response-end", 8),
        ("session-closed", 9),
    ]
    assert made[3].model_dump()["content"] == "Hello" and made[7].model_dump()["content"] == "Whole"
    closed = made[-1].model_dump()
    assert (closed["status"], closed["reason"], closed["session_id"]) == ("timeout", "timeout", "s")
    assert closed["duration"] >= 3

    # The same output read again after `last_event=7`: numbered alike, only what follows is sent,
    # and the end again even when it was seen.
    again = ChatOutput("s", started, seen=7)
    assert kinds([f for event in events for f in again.frames(event)]) == [
        ("response-end", 8),
        ("session-closed", 9),
    ]
    seen_all = ChatOutput("s", started, seen=9)
    assert kinds([f for event in events for f in seen_all.frames(event)]) == [("session-closed", 9)]


async def test_a_chat_opens_acknowledges_messages_and_streams_the_answer() -> None:
    async with gateway() as (ctx, catalog, auth):
        async with chat(ctx, auth) as (_, ws):
            bridge = ctx.last
            assert bridge.started is not None and bridge.started.channel == "web-chat"
            assert [r.agent_id for r in catalog.asked] == [AGENT]

            ws.send({"type": "message", "content": "hi", "id": "m1"})
            assert await ws.frame_of("message-ack") == {"type": "message-ack", "id": "m1", "message": "hi"}
            item, client_id = bridge.inputs[0]
            assert isinstance(item, sc.InputText) and (item.text, client_id) == ("hi", "m1")

            await bridge.output(sc.ServerTextDelta(chunk="Hel"))
            await bridge.output(sc.ServerTextDelta(chunk="lo"))
            await bridge.output(sc.ServerTurnComplete())
            assert await ws.frame() == {"type": "response-start", "content": "", "seq": 1}
            assert await ws.frame() == {"type": "response-chunk", "content": "Hel", "seq": 2}
            assert await ws.frame() == {"type": "response-chunk", "content": "lo", "seq": 3}
            assert await ws.frame() == {"type": "response-end", "content": "Hello", "seq": 4}
            await bridge.output(sc.ServerSessionClosed(reason=ConversationEndReason.FLOW_END))
            closed = await ws.frame()
            assert (closed["type"], closed["status"], closed["seq"]) == ("session-closed", "completed", 5)
            assert await ws.wait_closed() == (1000, "")
        assert bridge.input_types() == ["input_text"] and bridge.detached


async def test_bad_frames_get_message_error_with_their_id() -> None:
    async with gateway(gateway_input_burst=3, gateway_input_rate_per_s=0.001) as (ctx, _, auth):
        async with chat(ctx, auth) as (_, ws):
            ws.send({"type": "nope", "id": "x1"})
            error = await ws.frame()
            assert (error["type"], error["id"]) == ("message-error", "x1")
            assert error["error"].startswith(Codes.REALTIME_UNKNOWN_TYPE.code) and "seq" not in error
            ws.send_raw(data=b"binary")
            assert (await ws.frame())["error"].startswith(Codes.REALTIME_INVALID_JSON.code)
            ctx.last.fail_sends = True
            ws.send({"type": "message", "content": "lost?", "id": "m2"})
            unavailable = await ws.frame()
            assert unavailable["id"] == "m2"
            assert unavailable["error"].startswith(Codes.SERVICE_UNAVAILABLE.code)
            ws.send({"type": "message", "content": "over the limit"})
            assert (await ws.frame())["error"].startswith(Codes.REALTIME_RATE_LIMITED.code)
            ctx.last.fail_sends = False
            ws.drop()
        assert ctx.last.input_types() == ["disconnected"]


async def test_refusals_close_with_the_chat_close_codes() -> None:
    async with gateway() as (ctx, _, auth):
        auth.principals["voice"] = chat_token(token_type="voice")
        for query in ({}, {"token": "unknown"}, {"token": "voice"}):
            async with connect(ctx, ChatConnection, query) as (_, ws):
                code, _ = await ws.wait_closed()
                assert code == CloseCodes.UNAUTHORIZED, query

        # A session that is not this token's to resume: `message-error`, then 4404.
        auth.principals[TOKEN] = chat_token()
        async with connect(ctx, ChatConnection, {"token": TOKEN}, Resume(str(uuid.uuid4()), 0)) as (_, ws):
            assert (await ws.frame())["error"].startswith(Codes.REALTIME_SESSION_NOT_FOUND.code)
            assert await ws.wait_closed() == (CloseCodes.NOT_FOUND, Codes.REALTIME_SESSION_NOT_FOUND.code)
        assert ctx.bridges == [] and len(ctx.live) == 0


async def test_a_resume_renumbers_from_the_start_and_sends_only_what_was_missed() -> None:
    async with gateway() as (ctx, _, auth):
        token = chat_token()
        async with chat(ctx, auth, token) as (_, ws):
            session_id = str(ctx.last.conversation_id)
            ws.drop()

        auth.principals["fresh"] = chat_token(agent_id=token.agent_id, org_id=token.org_id)
        async with connect(ctx, ChatConnection, {"token": "fresh"}, Resume(session_id, 2)) as (_, ws):
            assert await ws.frame() == {"type": "connected", "session_id": session_id}
            bridge = ctx.last
            assert (str(bridge.conversation_id), bridge.last_index) == (session_id, 0)  # from the start
            assert bridge.input_types() == ["connected"]
            for chunk in ("a", "b", "c"):
                await bridge.output(sc.ServerTextDelta(chunk=chunk))
            assert await ws.frame() == {"type": "response-chunk", "content": "b", "seq": 3}
            assert await ws.frame() == {"type": "response-chunk", "content": "c", "seq": 4}
            ws.drop()


async def test_a_revoked_token_ends_the_answer_and_the_session() -> None:
    async with gateway() as (ctx, _, auth):
        async with chat(ctx, auth) as (conn, ws):
            await ctx.last.output(sc.ServerTextDelta(chunk="partial"))
            await ws.frame_of("response-chunk")
            conn._revoke(Codes.CREDENTIAL_REVOKED)
            assert await ws.frame() == {"type": "response-end", "content": "partial"}  # no `seq`
            error = await ws.frame()
            assert error["type"] == "message-error" and error["error"].startswith("auth.credential_revoked")
            closed = await ws.frame()
            assert (closed["type"], closed["reason"]) == ("session-closed", "user_exit")
            assert "seq" not in closed
            assert await ws.wait_closed() == (CloseCodes.UNAUTHORIZED, "auth.credential_revoked")
        assert ctx.last.input_types() == ["end"]


async def test_a_token_refresh_moves_the_expiry_and_expiry_closes_the_socket() -> None:
    # Long enough that a loaded machine keeps the order of the steps (a refresh asked for 0.5 s
    # before each expiry, the second token good for a second more).
    settings = {"gateway_chat_expiry_margin_s": 0, "gateway_chat_refresh_lead_s": 0.5}
    async with gateway(**settings) as (ctx, _, auth):
        soon = datetime.now(UTC) + timedelta(seconds=1.5)
        token = chat_token(expires_at=soon)
        auth.principals["later"] = chat_token(
            agent_id=token.agent_id, org_id=token.org_id, expires_at=soon + timedelta(seconds=1.0)
        )
        auth.principals["elsewhere"] = chat_token()
        async with chat(ctx, auth, token) as (conn, ws):
            ws.send({"type": "token-refresh", "token": "elsewhere"})
            # The refusal and the first request for a refresh, in whichever order they come.
            first: dict[str, dict[str, Any]] = {}
            while not {"token-refresh-error", "token-refresh-required"} <= first.keys():
                frame = await ws.frame()
                first.setdefault(frame["type"], frame)
            assert first["token-refresh-error"]["error"].startswith(Codes.CHAT_REFRESH_SCOPE_MISMATCH.code)
            ws.send({"type": "token-refresh", "token": "later"})
            await ws.frame_of("token-refresh-ack")
            assert conn.credential == "later"
            await ws.frame_of("token-refresh-required")
            await ws.frame_of("token-expired")
            assert await ws.wait_closed() == (CloseCodes.UNAUTHORIZED, Codes.CHAT_TOKEN_EXPIRED.code)


async def test_a_refresh_as_the_client_leaves_does_not_hold_the_connection() -> None:
    """When the receive ends the connection cancels its timers and waits for them. A refresh and
    the client's leaving handled in one step: on Python 3.11 `asyncio.wait_for` swallowed the
    expiry timer's cancel as the refresh woke it, the timer waited on for the token's next expiry
    (minutes away), and the connection's end with it."""
    async with gateway() as (ctx, _, auth):
        token = chat_token()
        auth.principals[TOKEN] = token
        auth.principals["later"] = chat_token(agent_id=token.agent_id, org_id=token.org_id)
        ws = FakeSocket({"token": TOKEN})
        conn = ChatConnection(ctx, ws, None)  # type: ignore[arg-type]
        run = asyncio.create_task(conn.run())
        timers: list[asyncio.Task[Any]] = []
        try:
            await ws.frame_of("connected")
            for _ in range(5):  # the timers into their waits
                await asyncio.sleep(0)
            timers = [t for t in asyncio.all_tasks() if t.get_name() in ("chat-expiry", "chat-heartbeat")]
            expiry = next(t for t in timers if t.get_name() == "chat-expiry")
            ws.send({"type": "token-refresh", "token": "later"})  # a refresh ...
            ws.drop()  # ... and the client gone, read in the same step
            done, _ = await asyncio.wait({run}, timeout=2)
            assert done, "the connection waited for its expiry timer"
            assert expiry.cancelled()
            assert ctx.last.input_types() == ["disconnected"]  # the client left; the session stays
        finally:
            for task in [*timers, run]:  # without the fix, so that the test ends
                task.cancel()
