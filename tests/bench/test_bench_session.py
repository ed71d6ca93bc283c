"""`bench.realtime.Session.hold`: a held session reads what the server sends, as a client does, so
the server's keepalive does not close it; a session nobody reads is closed (what the admission
phase's held sessions were before `hold`, for any hold longer than ~40 s at the stack's settings)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.client_loop import run_client
from bench.realtime import Session


async def _ticking(ws: ServerConnection) -> None:
    # Like the gateway's ticks: a frame every 10 ms, and the server's keepalive pings meanwhile.
    while True:
        await ws.send('{"type": "tick"}')
        await asyncio.sleep(0.01)


async def test_a_held_session_stays_open_and_an_unread_one_is_closed_by_the_keepalive() -> None:
    async with serve(_ticking, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        # No client keepalive: only the server's pings, which need the client to read.
        held = Session(await connect(f"ws://127.0.0.1:{port}", ping_interval=None))
        unread = Session(await connect(f"ws://127.0.0.1:{port}", ping_interval=None))
        held.hold()
        await asyncio.sleep(2.0)
        # The unread one queued 16 frames, stopped reading and missed the pings: the server closed
        # it (its client does not know yet, reading nothing). The held one is open on both sides.
        assert len(server.connections) == 1
        assert held.is_open
        await held.close()
        assert not held.is_open
        unread.ws.transport.abort()  # dead already: no closing handshake to wait for


async def _agent(ws: ServerConnection) -> None:
    # The gateway's side of an opening: handshake_ok, the greeting's turn_complete, then silence.
    await ws.recv()
    await ws.send('{"type": "handshake_ok"}')
    await ws.send('{"type": "turn_complete"}')
    await ws.wait_closed()


async def test_a_session_opens_as_a_browser_does_without_proxies_or_pings_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A proxy named in the environment that nobody listens on: a client that looked it up would
    # be refused (websockets consults these on every connect unless told not to).
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    for name in ("ws_proxy", "http_proxy", "all_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead.getsockname()[1]}")
    async with serve(_agent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        session = await Session.open(f"ws://127.0.0.1:{port}/realtime", "key", "agent")
        assert session.is_open
        assert session.ws.ping_interval is None  # only the server's keepalive pings, answered
        await session.close()
    dead.close()


def test_the_benches_clients_run_on_uvloop() -> None:
    async def loop_kind() -> type:
        return type(asyncio.get_running_loop())

    assert run_client(loop_kind()) is uvloop.Loop
