"""`RealtimeConnection` (and the `SessionConnection` skeleton under it) without a server: the test
plays the client on a `FakeSocket` and the runtime on a `FakeBridge`; the catalog answers on the
in-memory broker (session_fakes.py). The same paths over real sockets and services are
tests/e2e/test_realtime.py, test_revocation.py and test_realtime_fence.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from structlog.testing import capture_logs

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes
from parley_common.session_contract import (
    InputText,
    ServerAudioDelta,
    ServerSessionClosed,
    ServerTextDelta,
    ServerTurnComplete,
)
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_session_gateway.access import Admission
from parley_session_gateway.realtime.connection import RealtimeConnection
from parley_session_gateway.resume import Resume, remember

from .session_fakes import AGENT, FakeAuth, FakeGateway, FakeSocket, connect, gateway, principal, running

KEY = "pk_test_key"


def handshake(**fields: Any) -> dict[str, Any]:
    return {"type": "handshake", "agent_id": AGENT, **fields}


@asynccontextmanager
async def session(
    ctx: FakeGateway, auth: FakeAuth, who: Principal | None = None
) -> AsyncIterator[tuple[RealtimeConnection, FakeSocket]]:
    """A `/realtime` connection past its `handshake_ok`; it must end by the end of the block."""
    auth.principals[KEY] = who or principal()
    async with connect(ctx, RealtimeConnection, {"token": KEY}) as (conn, ws):
        ws.send(handshake())
        ok = await ws.frame()
        assert ok == {"type": "handshake_ok", "conversation_id": str(ctx.last.conversation_id)}
        yield conn, ws


async def test_a_session_opens_relays_input_and_output_and_ends_with_the_runtime() -> None:
    async with gateway() as (ctx, catalog, auth):
        async with session(ctx, auth) as (conn, ws):
            bridge = ctx.last
            assert bridge.new is True  # attached before the start: nothing to catch up on
            assert bridge.started is not None and bridge.started.agent_id == AGENT
            assert bridge.started.connection_id == conn.connection_id
            assert [r.agent_id for r in catalog.asked] == [AGENT]

            ws.send({"type": "input_text", "text": "hello"})
            item = await bridge.wait_input("input_text")
            assert isinstance(item, InputText) and item.text == "hello"
            assert item.connection_id == conn.connection_id

            await bridge.output(ServerTextDelta(chunk="hi"))
            assert await ws.frame() == {"type": "text_delta", "chunk": "hi"}
            await bridge.output(ServerAudioDelta(size=3, audio=b"abc"))
            assert await ws.frame() == {"type": "audio_delta", "size": 3}
            assert await ws.outgoing.get() == b"abc"
            await bridge.output(ServerTurnComplete())
            assert (await ws.frame())["type"] == "turn_complete"
            await bridge.output(ServerSessionClosed(reason=ConversationEndReason.FLOW_END))
            assert (await ws.frame())["type"] == "session_closed"
            assert await ws.wait_closed() == (1000, "")
        # The runtime ended it: no `disconnected` (nor anything else) follows, the bus side is let go.
        assert bridge.input_types() == ["input_text"]
        assert bridge.detached and len(ctx.live) == 0


async def test_the_upgrades_headers_are_let_go_once_the_session_is_open() -> None:
    async with gateway() as (ctx, _, auth):
        auth.principals[KEY] = principal()
        async with connect(ctx, RealtimeConnection, {"token": KEY}) as (_, ws):
            assert ws.headers["user-agent"] == "fake"  # read while the socket opens
            ws.send(handshake())
            assert (await ws.frame())["type"] == "handshake_ok"
            assert ws.scope["headers"] == [] and len(ws.headers) == 0  # not kept while it runs
            ws.drop()


async def test_a_held_socket_receives_in_its_own_task_and_keeps_no_handshake_or_timing() -> None:
    """No task beside the socket's own while it is held (none receiving, none waiting for the end),
    and neither the `handshake` frame nor the timing's model is kept (change 90)."""
    async with gateway(gateway_tick_interval_s=0.02) as (ctx, _, auth):
        auth.principals[KEY] = principal()
        ws = FakeSocket({"token": KEY})
        conn = RealtimeConnection(ctx, ws, None)  # type: ignore[arg-type]
        async with running(conn.run) as task:
            ws.send(handshake())
            assert (await ws.frame())["type"] == "handshake_ok"
            await ctx.last.control(conn.connection_id, deadline_s=60)
            assert (await ws.frame_of("tick"))["remaining_ms"] <= 60_000
            assert conn._receiving is task
            assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("realtime-")] in (
                [],
                ["realtime-tick"],  # a tick on its way (the fake socket has no write at once)
            )
            assert conn.hello is None and not hasattr(conn, "timing")
            assert conn.deadline is not None and 50 < conn.deadline - time.time() <= 60
            ws.send({"type": "input_text", "text": "still heard"})
            assert (await ctx.last.wait_input("input_text")).text == "still heard"  # type: ignore[union-attr]
            ws.drop()
        assert not task.cancelled() and ctx.last.input_types() == ["input_text", "disconnected"]


async def test_an_end_from_elsewhere_stops_the_receive_and_a_servers_cancel_still_cancels() -> None:
    """`_end` from another task cancels the socket's wait and the connection finishes as usual
    (the runtime told, the socket closed); a cancel of the socket's task by the server is never
    taken for it, alone or together with it."""
    async with gateway() as (ctx, _, auth):
        async with session(ctx, auth) as (conn, ws):
            conn._end()
            assert await ws.wait_closed() == (1000, "")
        assert ctx.last.input_types() == ["disconnected"] and len(ctx.live) == 0
        for also_ended in (False, True):
            ws = FakeSocket({"token": KEY})
            conn = RealtimeConnection(ctx, ws, None)  # type: ignore[arg-type]
            task = asyncio.create_task(conn.run())
            ws.send(handshake())
            assert (await ws.frame())["type"] == "handshake_ok"
            if also_ended:
                conn._end()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            assert task.cancelled()


async def test_an_opening_is_one_info_line_saying_who_from_where() -> None:
    # uvicorn's own lines for the socket are DEBUG (parley_common.logging); this one stays at INFO.
    async with gateway() as (ctx, _, auth):
        with capture_logs() as logs:
            async with session(ctx, auth) as (_, ws):
                ws.drop()
    opened = [
        (e["log_level"], e["agent_id"], e["client"], e["resumed"])
        for e in logs
        if "session_open" in e["event"]
    ]
    assert opened == [("info", AGENT, "203.0.113.7", False)]


async def test_a_dropped_socket_tells_the_runtime_and_stays_resumable() -> None:
    async with gateway(gateway_resume_ttl_s=77) as (ctx, _, auth):
        async with session(ctx, auth) as (_, ws):
            ws.drop()
        bridge = ctx.last
        assert bridge.input_types() == ["disconnected"]
        assert ctx.redis.ttls[f"parley:gw:session:{bridge.conversation_id}"] == 77  # type: ignore[attr-defined]


async def test_a_resume_attaches_after_the_last_event_and_says_connected() -> None:
    async with gateway() as (ctx, _, auth):
        owner = principal()
        auth.principals[KEY] = owner
        conversation_id = uuid.uuid4()
        await remember(ctx.line, conversation_id, Admission(principal=owner, agent_id=AGENT), 60)
        async with connect(ctx, RealtimeConnection, {"token": KEY}, Resume(str(conversation_id), 5)) as (
            _,
            ws,
        ):
            ws.send(handshake())
            assert (await ws.frame())["conversation_id"] == str(conversation_id)
            bridge = ctx.last
            assert (bridge.conversation_id, bridge.last_index, bridge.started) == (conversation_id, 5, None)
            assert bridge.new is False  # caught up from the stream after event 5
            assert bridge.input_types() == ["connected"]
            ws.drop()

        # Someone else's conversation, or none: not found (never saying which).
        auth.principals["other"] = principal()
        async with connect(ctx, RealtimeConnection, {"token": "other"}, Resume(str(conversation_id), 0)) as (
            _,
            ws,
        ):
            ws.send(handshake())
            assert await ws.frame() == {"type": "handshake_error", "reason": "realtime.session_not_found"}
            assert await ws.wait_closed() == (CloseCodes.HANDSHAKE_FAILED, "realtime.session_not_found")


async def test_refusals_answer_handshake_error_and_close() -> None:
    async with gateway() as (ctx, catalog, auth):
        auth.principals[KEY] = principal()
        cases: list[tuple[dict[str, str], dict[str, Any] | str, str]] = [
            ({"token": KEY}, {"type": "input_text", "text": "hi"}, "realtime.handshake_required"),
            ({"token": KEY}, "{not json", "realtime.handshake_required"),
            ({}, handshake(), "auth.unauthenticated"),
            ({"token": "unknown"}, handshake(), "auth.unauthenticated"),
        ]
        for query, first, reason in cases:
            async with connect(ctx, RealtimeConnection, query) as (_, ws):
                if isinstance(first, str):
                    ws.send_raw(first)
                else:
                    ws.send(first)
                assert await ws.frame() == {"type": "handshake_error", "reason": reason}, first
                assert await ws.wait_closed() == (CloseCodes.HANDSHAKE_FAILED, reason)

        # The catalog's own code is the reason, verbatim.
        catalog.refuse("catalog.agent_not_live")
        async with connect(ctx, RealtimeConnection, {"token": KEY}) as (_, ws):
            ws.send(handshake())
            assert await ws.frame() == {"type": "handshake_error", "reason": "catalog.agent_not_live"}
        assert ctx.bridges == [] and len(ctx.live) == 0


async def test_a_silent_client_times_out() -> None:
    async with (
        gateway(gateway_handshake_timeout_s=0.05) as (ctx, _, _auth),
        connect(ctx, RealtimeConnection) as (_, ws),
    ):
        assert await ws.frame() == {"type": "handshake_error", "reason": "realtime.handshake_timeout"}


async def test_bad_frames_get_an_error_and_the_session_lives_on() -> None:
    async with gateway(gateway_input_burst=3, gateway_input_rate_per_s=0.001) as (ctx, _, auth):
        async with session(ctx, auth) as (_, ws):  # the handshake is not counted: read before the loop
            ws.send_raw("{")
            assert (await ws.frame())["code"] == Codes.REALTIME_INVALID_JSON.code
            ws.send(handshake())
            assert (await ws.frame())["code"] == Codes.REALTIME_ALREADY_STARTED.code
            ws.send_raw(data=b"\x00\x01")
            assert (await ws.frame())["code"] == Codes.REALTIME_UNEXPECTED_BINARY.code
            ws.send({"type": "input_text", "text": "still here"})
            await ctx.last.wait_input("input_text")
            ws.send({"type": "input_text", "text": "over the limit"})
            limited = await ws.frame()
            assert limited["type"] == "error" and limited["code"] == Codes.REALTIME_RATE_LIMITED.code
            ws.drop()
        assert ctx.last.input_types() == ["input_text", "disconnected"]


async def test_an_input_the_bus_did_not_store_is_service_unavailable() -> None:
    async with gateway() as (ctx, _, auth), session(ctx, auth) as (_, ws):
        ctx.last.fail_sends = True
        ws.send({"type": "input_text", "text": "lost?"})
        assert (await ws.frame())["code"] == Codes.SERVICE_UNAVAILABLE.code
        ws.drop()


async def test_each_input_is_one_span_current_while_it_is_stored() -> None:
    """`realtime.input`: current while the bridge stores the input (its trace context goes on the
    bus), ended after; an input the bus did not store ends it with the refusal recorded."""
    exporter = InMemorySpanExporter()
    setup_telemetry(CommonSettings()).add_span_processor(SimpleSpanProcessor(exporter))
    current: list[trace.SpanContext] = []
    async with gateway() as (ctx, _, auth), session(ctx, auth) as (_, ws):
        bridge = ctx.last
        send = bridge.send

        async def seen(item: Any, client_id: str | None = None, timeout_s: float | None = None) -> None:
            current.append(trace.get_current_span().get_span_context())
            await send(item, client_id, timeout_s)

        bridge.send = seen  # type: ignore[method-assign]
        ws.send({"type": "input_text", "text": "stored"})
        await bridge.wait_input("input_text")
        bridge.fail_sends = True
        ws.send({"type": "input_text", "text": "lost?"})
        assert (await ws.frame())["code"] == Codes.SERVICE_UNAVAILABLE.code
        ws.drop()
    stored, lost = [s for s in exporter.get_finished_spans() if s.name == "realtime.input"][:2]
    assert [stored.context, lost.context] == current[:2]
    assert dict(stored.attributes or {}) == {"input.type": "input_text"}
    assert stored.status.status_code is StatusCode.UNSET and not stored.events
    assert stored.end_time is not None and trace.get_current_span() is trace.INVALID_SPAN
    assert lost.status.status_code is StatusCode.ERROR
    assert (lost.status.description or "").startswith("FrameError: ")
    (event,) = lost.events
    assert event.name == "exception"
    assert str((event.attributes or {})["exception.type"]).endswith(".FrameError")


async def test_a_revoked_credential_ends_the_session_with_user_exit() -> None:
    async with gateway() as (ctx, _, auth):
        async with session(ctx, auth) as (conn, ws):
            conn._revoke(Codes.CREDENTIAL_REVOKED)
            error = await ws.frame()
            assert (error["type"], error["code"]) == ("error", "auth.credential_revoked")
            assert await ws.frame() == {"type": "session_closed", "reason": "user_exit"}
            assert await ws.wait_closed() == (CloseCodes.UNAUTHORIZED, "auth.credential_revoked")
        end = ctx.last.inputs[-1][0]
        assert json.loads(end.model_dump_json())["reason"] == "user_exit"
        assert ctx.last.input_types() == ["end"]


async def test_a_newer_connection_supersedes_this_one_and_timing_makes_ticks() -> None:
    async with gateway(gateway_tick_interval_s=0.02) as (ctx, _, auth):
        async with session(ctx, auth, principal(CredentialKind.SESSION)) as (conn, ws):
            await ctx.last.control(conn.connection_id, deadline_s=60)
            assert conn.acknowledged
            tick = await ws.frame_of("tick")
            assert 0 < tick["remaining_ms"] <= 60_000
            await ctx.last.control("another-connection")
            assert await ws.wait_closed() == (CloseCodes.SUPERSEDED, "superseded by a newer connection")
        # The other connection serves the session now: this one neither ends nor leaves it.
        assert ctx.last.input_types() == [] and conn.superseded


def remaining_s(conn: RealtimeConnection) -> float:
    assert conn.deadline is not None
    return conn.deadline - time.time()


async def test_ticks_follow_the_most_recent_timing_by_output_index() -> None:
    """A turn's outputs carry its timing (no control message per turn); outputs are replayed on a
    resume or a catch-up, so an older one's timing never replaces a newer one's, and a control
    message wins a tie with the output of its index. Outputs never supersede a connection."""
    async with gateway(gateway_tick_interval_s=0.02) as (ctx, _, auth), session(ctx, auth) as (conn, ws):
        bridge = ctx.last
        await bridge.control(conn.connection_id, deadline_s=600, index=0)  # the claim
        assert 590 < remaining_s(conn) <= 600
        await bridge.output(ServerTextDelta(chunk="Hi"), deadline_s=3600)  # a turn began: 1
        assert 3590 < remaining_s(conn) <= 3600
        await bridge.output(ServerTurnComplete(), deadline_s=300)  # it ended: 2
        assert 290 < remaining_s(conn) <= 300
        assert 290_000 < (await ws.frame_of("tick"))["remaining_ms"] <= 300_000
        # Replayed (a catch-up): older than what is kept.
        await bridge.output(ServerTextDelta(chunk="Hi"), index=1, deadline_s=3600)
        assert 290 < remaining_s(conn) <= 300
        # A control message of index 2 was published after output 2; one of index 1 before it.
        await bridge.control(conn.connection_id, deadline_s=200, index=1)
        assert 290 < remaining_s(conn) <= 300
        await bridge.control(conn.connection_id, deadline_s=200, index=2)
        assert 190 < remaining_s(conn) <= 200
        await bridge.output(ServerTurnComplete(), index=2, deadline_s=300)
        assert 190 < remaining_s(conn) <= 200
        # An older runtime's control message (no index) counts as of the last output seen.
        await bridge.control(conn.connection_id, deadline_s=100)
        assert 90 < remaining_s(conn) <= 100
        await bridge.output(ServerTextDelta(chunk="x"), deadline_s=50)  # 3
        assert 40 < remaining_s(conn) <= 50
        assert conn.acknowledged and not conn.superseded
        ws.drop()
