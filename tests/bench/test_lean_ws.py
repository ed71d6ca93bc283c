"""`bench.lean_ws`: the benches' own WebSocket client, against websockets' server (which checks
what a client must do: masking, the upgrade's headers, the closing handshake)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedOK
from websockets.http11 import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.client_loop import run_client
from bench.lean_ws import ConnectionClosed, HandshakeRefused, LeanSocket

# Each length encoding's edges (7-bit, 16-bit, 64-bit), and text that is not ASCII.
TEXTS = ["", "a", "x" * 125, "x" * 126, "é" * 40_000, "y" * 65_535, "z" * 65_536, "ü€" * 35_000]


@asynccontextmanager
async def server(handler, **options) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with serve(handler, "127.0.0.1", 0, **options) as srv:
        yield f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/realtime?token=k"


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_texts_of_every_length_encoding_go_out_masked_and_come_back_whole() -> None:
    async with server(_echo, max_size=None) as url:
        ws = await LeanSocket.connect(url)
        for text in TEXTS:
            ws.send(text)  # websockets' server refuses an unmasked client frame (1002)
        assert [await ws.recv() for _ in TEXTS] == TEXTS
        await ws.close()
        assert ws.close_code == 1000 and not ws.is_open


async def test_a_fragmented_message_is_assembled() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(iter(["one ", "two ", "three"]))
        await ws.wait_closed()

    async with server(fragments) as url:
        ws = await LeanSocket.connect(url)
        assert await ws.recv() == "one two three"
        await ws.close()


async def test_a_held_socket_answers_the_servers_pings_and_drops_what_it_is_sent() -> None:
    async def ticking(ws: ServerConnection) -> None:
        while True:
            await ws.send('{"type": "tick"}')
            await asyncio.sleep(0.01)

    async with serve(ticking, "127.0.0.1", 0, ping_interval=0.2, ping_timeout=0.2) as srv:
        ws = await LeanSocket.connect(f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/")
        ws.hold()
        await asyncio.sleep(2.0)  # ten keepalive pings: an unanswered one closes the socket
        assert ws.is_open and len(srv.connections) == 1
        assert not ws._messages  # ~200 ticks read and dropped, none kept
        await ws.close()
        assert ws.close_code == 1000


async def test_the_servers_close_is_echoed_and_ends_recv() -> None:
    closed: list[int | None] = []

    async def going_away(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(1001, "bye")  # returns once the client echoed it
        closed.append(ws.close_code)

    async with server(going_away) as url:
        ws = await LeanSocket.connect(url)
        assert await ws.recv() == "last"
        with pytest.raises(ConnectionClosed) as err:
            await ws.recv()
        assert err.value.code == 1001
        with pytest.raises(ConnectionClosed):
            ws.send("too late")
        await asyncio.sleep(0.1)
    assert closed == [1001]


async def test_our_close_reaches_the_server_as_normal() -> None:
    seen: list[BaseException] = []

    async def reader(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosedOK as exc:
            seen.append(exc)

    async with server(reader) as url:
        ws = await LeanSocket.connect(url)
        await ws.close()
        await asyncio.sleep(0.1)
    assert len(seen) == 1 and seen[0].rcvd is not None and seen[0].rcvd.code == 1000


async def test_an_upgrade_refused_raises_with_its_status() -> None:
    def shed(_ws: ServerConnection, _request: Request) -> Response:
        return _ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")

    async with server(_echo, process_request=shed) as url:
        with pytest.raises(HandshakeRefused) as err:
            await LeanSocket.connect(url)
    assert err.value.status == 503


async def test_an_upgrade_with_the_wrong_accept_is_refused() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
        )
        await writer.drain()
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(liar, "127.0.0.1", 0)
    async with srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeRefused, match="Accept"):
            await LeanSocket.connect(f"ws://127.0.0.1:{port}/")


async def test_a_socket_gone_before_its_upgrade_raises_closed() -> None:
    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    srv = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionClosed):
            await LeanSocket.connect(f"ws://127.0.0.1:{port}/")


def test_it_runs_on_the_benches_loop() -> None:
    # uvloop's transports are not `asyncio.Transport`s: what the benches run on is tested too.
    async def echo_once() -> str:
        async with server(_echo) as url:
            ws = await LeanSocket.connect(url)
            ws.send("on uvloop")
            text = await ws.recv()
            await ws.close()
            return text

    assert run_client(echo_once()) == "on uvloop"


async def test_binary_messages_are_dropped_and_text_still_comes() -> None:
    # A voice session's audio frames: the benches read only text; decoding them would fail.
    async def mixed(ws: ServerConnection) -> None:
        await ws.send(b"\xff\xfe audio")
        await ws.send(iter([b"\x80", b"\x81"]))  # fragmented binary
        await ws.send("after the audio")
        await ws.wait_closed()

    async with server(mixed) as url:
        ws = await LeanSocket.connect(url)
        assert await ws.recv() == "after the audio"
        assert ws.is_open
        await ws.close()
