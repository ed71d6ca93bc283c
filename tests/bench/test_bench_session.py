"""`bench.realtime.Session`: a session opens as a browser's does (no proxy lookup, no pings of its
own), and a held one reads and drops what the server sends with no task of its own, answering the
server's keepalive pings, so the keepalive does not close it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
import uvloop
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.client_loop import run_client
from bench.realtime import Session


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
        await session.close()
        assert not session.is_open
    dead.close()


async def test_a_held_session_stays_open_through_the_servers_keepalive() -> None:
    async def ticking(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"type": "handshake_ok"}')
        await ws.send('{"type": "turn_complete"}')
        while True:  # like the gateway's ticks, with its keepalive pings meanwhile
            await ws.send('{"type": "tick"}')
            await asyncio.sleep(0.01)

    async with serve(ticking, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        session = await Session.open(f"ws://127.0.0.1:{port}/realtime", "key", "agent")
        session.hold()
        await asyncio.sleep(2.0)
        assert session.is_open and len(server.connections) == 1
        await session.close()


def test_the_benches_clients_run_on_uvloop() -> None:
    async def loop_kind() -> type:
        return type(asyncio.get_running_loop())

    assert run_client(loop_kind()) is uvloop.Loop
