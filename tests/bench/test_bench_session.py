"""`bench.realtime.Session.hold`: a held session reads what the server sends, as a client does, so
the server's keepalive does not close it; a session nobody reads is closed (what the admission
phase's held sessions were before `hold`, for any hold longer than ~40 s at the stack's settings)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

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
