"""corked_ws: the frames of one loop turn in one write, in order, and a socket that still works
like uvicorn's own (handshake, frames both ways, close) behind a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode

from parley_common.flag import Flag
from parley_common.logging import setup_logging
from parley_session_gateway.connection import SendTurns
from parley_session_gateway.corked_ws import (
    SEND_TEXT_NOW,
    CorkedTransport,
    CorkedWebSocketsProtocol,
    Inbox,
    text_frame,
)


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_loop_turn_are_one_write_in_order() -> None:
    raw = Recorded()
    corked = CorkedTransport(raw, asyncio.get_running_loop())
    corked.write(b"a")
    corked.write(b"bc")
    corked.writelines([b"d", b"e"])
    assert raw.writes == [] and corked.get_write_buffer_size() == 5
    await asyncio.sleep(0)
    assert raw.writes == [b"abcde"]
    corked.write(b"f")  # alone in its turn: written as it is
    await asyncio.sleep(0)
    corked.write(b"g")
    await asyncio.sleep(0)
    assert raw.writes == [b"abcde", b"f", b"g"]


async def test_close_writes_what_is_collected_first_and_abort_drops_it() -> None:
    raw = Recorded()
    corked = CorkedTransport(raw, asyncio.get_running_loop())
    corked.write(b"last words")
    corked.close()
    assert raw.writes == [b"last words"] and raw.closed
    await asyncio.sleep(0)  # the turn's own uncork finds nothing more
    assert raw.writes == [b"last words"]

    raw = Recorded()
    corked = CorkedTransport(raw, asyncio.get_running_loop())
    corked.write(b"never sent")
    corked.abort()
    await asyncio.sleep(0)
    assert raw.writes == [] and raw.aborted


async def test_frames_alone_go_out_together_at_the_turns_end_after_what_a_socket_collected() -> None:
    loop = asyncio.get_running_loop()
    one, two = Recorded(), Recorded()
    first, second = CorkedTransport(one, loop), CorkedTransport(two, loop)
    first.write_alone(b"tick-1")
    second.write_alone(b"tick-2")
    assert one.writes == two.writes == []  # at the turn's end, together
    await asyncio.sleep(0)
    assert (one.writes, two.writes) == ([b"tick-1"], [b"tick-2"])
    first.write(b"a")
    first.write_alone(b"b")  # after what this socket collected in this turn, in the same write
    second.write_alone(b"c")
    second.write(b"d")  # collected after a frame alone: written after it
    await asyncio.sleep(0)
    assert (one.writes, two.writes) == ([b"tick-1", b"ab"], [b"tick-2", b"c", b"d"])
    one.closed = True
    first.write_alone(b"late")  # a transport closing by the turn's end is not written to
    await asyncio.sleep(0)
    assert one.writes == [b"tick-1", b"ab"]


def test_a_loops_frames_alone_do_not_keep_the_loop_once_written() -> None:
    loop = asyncio.new_event_loop()
    raw = Recorded()

    async def tick() -> None:
        CorkedTransport(raw, asyncio.get_running_loop()).write_alone(b"tick")
        await asyncio.sleep(0)

    loop.run_until_complete(tick())
    loop.close()
    assert raw.writes == [b"tick"]
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_is_the_bytes_websockets_frames(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


LATE: list[bool] = []
KEPT: list[tuple[Any, Any]] = []  # what the protocol holds of the upgrade once the socket is accepted
PRIMITIVES: list[tuple[type, type]] = []  # the protocol's receive queue and `writable`, by type


async def _echo_burst(websocket: WebSocket) -> None:
    send_now = websocket.scope["extensions"][SEND_TEXT_NOW]
    await websocket.accept()
    protocol = send_now.__self__
    KEPT.append((protocol.request, protocol.response))
    PRIMITIVES.append((type(protocol.queue), type(protocol.writable)))
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.send_text("closing")
            await websocket.close(code=1000)
            LATE.append(send_now("too late"))  # closed: declined, nothing written
            return
        if text == "now":  # written at once, in order with what ASGI sent before it
            await websocket.send_text("before")
            assert send_now("now-0") and send_now("now-1")
            assert send_now("alone-é", True) and send_now("x" * 70_000, True)  # framed here
            continue
        for i in range(3):  # three frames in one loop turn: one write
            await websocket.send_text(f"{text}-{i}")


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/ws", _echo_burst)]),
        host="127.0.0.1",
        port=port,
        ws=CorkedWebSocketsProtocol,
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_real_socket_behind_uvicorn_gets_every_frame_in_order_and_the_close() -> None:
    PRIMITIVES.clear()
    async with _server() as port, connect(f"ws://127.0.0.1:{port}/ws") as ws:
        for word in ("one", "two"):
            await ws.send(word)
            assert [await ws.recv() for _ in range(3)] == [f"{word}-{i}" for i in range(3)]
        await ws.send("now")
        assert [await ws.recv() for _ in range(5)] == ["before", "now-0", "now-1", "alone-é", "x" * 70_000]
        await ws.send("bye")
        assert await ws.recv() == "closing"
        await ws.wait_closed()
        assert ws.close_code == 1000
    assert LATE == [False]
    assert [(Inbox, Flag)] == PRIMITIVES  # not asyncio's Queue and Event: ~3.7 KiB less a socket


async def test_the_inbox_hands_out_messages_in_order_and_wakes_every_reader() -> None:
    inbox = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert inbox.qsize() == 2 and await inbox.get() == "a" and await inbox.get() == "b"
    readers = [asyncio.create_task(inbox.get()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(r.done() for r in readers)
    inbox.put_nowait("c")
    await asyncio.sleep(0)
    assert sum(r.done() for r in readers) == 1  # one message, one reader; the other waits on
    inbox.put_nowait("d")
    assert sorted(await asyncio.gather(*readers)) == ["c", "d"] and inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    waiting.cancel()  # a cancelled read takes nothing
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    inbox.put_nowait("e")
    assert await inbox.get() == "e"


async def test_an_accepted_socket_keeps_neither_the_upgrades_request_nor_its_response() -> None:
    """Both sides' headers, which nothing reads once the accept is written, are not kept for the
    socket's life (the app has the request's in its scope), neither by uvicorn nor by websockets'
    parser (which goes on reading frames in the generator that read the request)."""
    KEPT.clear()
    probe = uuid.uuid4().hex
    async with (
        _server() as port,
        connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"X-Probe": probe}) as ws,
    ):
        await ws.send("one")
        assert [await ws.recv() for _ in range(3)] == [f"one-{i}" for i in range(3)]
        gc.collect()
        # The client's own request has the header; no other Headers object may.
        kept = [h for h in gc.get_objects() if isinstance(h, Headers) and probe in h.values()]
        assert ws.request is not None
        assert [id(h) for h in kept] == [id(ws.request.headers)]
    assert KEPT == [(None, None)]


async def test_a_socket_opened_and_closed_builds_no_log_record_of_its_own() -> None:
    """uvicorn's and websockets' per-connection INFO lines ("[accepted]", "connection open",
    "connection closed") are dropped before a record is built (`PerConnectionLogger`)."""
    setup_logging("unit", "INFO", json_output=True)
    real = logging.Logger.makeRecord
    try:
        async with _server() as port:
            with mock.patch.object(logging.Logger, "makeRecord", autospec=True, side_effect=real) as built:
                async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                    await ws.send("one")
                    assert [await ws.recv() for _ in range(3)] == [f"one-{i}" for i in range(3)]
                    await ws.send("bye")
                    assert await ws.recv() == "closing"
                    await ws.wait_closed()
                await asyncio.sleep(0.1)  # the server's side of the close
    finally:
        structlog.reset_defaults()
    assert built.call_count == 0


async def test_a_socket_is_not_idle_while_a_send_waits_for_its_turn() -> None:
    """`SendTurns.idle` (when a frame may be written at once) stays False from a send's wait to its
    end, including after the lock was released to it and before it woke, when `Lock.locked()` is
    already False: a frame written then would overtake it."""
    turns = SendTurns()
    order: list[str] = []
    gate = asyncio.Event()

    async def send(name: str, hold: asyncio.Event | None = None) -> None:
        async with turns:
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(send("first", gate))
    await asyncio.sleep(0)
    second = asyncio.create_task(send("second"))
    await asyncio.sleep(0)
    assert not turns.idle
    gate.set()
    await asyncio.sleep(0)  # the first sent and released the lock to the second, not yet awake
    assert first.done() and not turns._lock.locked() and not turns.idle
    await second
    assert turns.idle and order == ["first", "second"]
