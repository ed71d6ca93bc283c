"""uvicorn's WebSocket protocol, with the frames sent to one socket in one turn of the event loop
written together.

uvicorn writes each frame to the socket as it is sent: one `write` system call each, and for the
edge (Caddy) and the client one wake-up and read each. A turn's last text delta and its
`turn_complete` reach the gateway in one NATS read and are sent one after the other, so they can
share a write. `CorkedTransport` collects what is written during one turn of the loop and writes it
at the next (a `call_soon`: microseconds later, nothing waits on a timer); a frame sent alone still
costs one write. Everything else (close, flow control, addresses) is the transport's own, and a
close or an abort writes or drops what is collected first, as the transport would have.

The protocol also offers the app a text frame written at once (`SEND_TEXT_NOW`, an ASGI scope
extension: `(text, alone=False) -> bool`): what uvicorn's `send` does for a text frame, without a
task, an await or Starlette's and uvicorn's layers in between (~10 µs a frame), framed here
(`text_frame`: the same bytes as websockets' `Frame.serialize`, a fifth of its cost) whenever
websockets would only frame it. It declines (False) whenever `send` would do more than write (not
open, closing, the socket paused for writing); the app then sends as usual. The gateway uses it
only when nothing else is being sent on the socket, so frames keep their order. `alone`: a frame
nothing else of its socket's loop turn will join (a tick): written at the turn's end together with
every other socket's such frame (`Burst`, one `call_soon` for all), not collected per socket.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import OPEN

from parley_common.flag import Flag
from parley_common.logging import PerConnectionLogger

SEND_TEXT_NOW = "parley.send_text_now"
# One for every connection: what uvicorn's protocol and its websockets connection log through.
_QUIET = PerConnectionLogger(logging.getLogger("uvicorn.error"))


class CorkedTransport(asyncio.Transport):
    """A transport whose writes of one loop turn go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._corked: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._corked:
            self._loop.call_soon(self._uncork)
        self._corked.append(bytes(data))

    def write_alone(self, data: bytes) -> None:
        """`data` that nothing else of this socket's loop turn will join: written at the turn's end
        with every other socket's such data (`Burst`), or after this turn's collected writes, in
        order, when there are any."""
        if self._corked:
            self._corked.append(data)
        else:
            Burst.add(self._loop, self._transport, data)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        if corked and not self._transport.is_closing():
            self._transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._uncork()
        self._transport.close()

    def abort(self) -> None:
        self._corked = []
        self._transport.abort()

    def write_eof(self) -> None:
        self._uncork()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._corked)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class Burst:
    """The frames written alone in one turn of a loop (a group's ticks), written together at its
    end, one socket after the other: one `call_soon` for all of them, where collecting each
    socket's writes cost one each, and the edge finds the sockets ready together rather than
    woken for each in turn. The second pass touches only each socket's transport and bytes.
    Kept by loop, weakly: nothing here holds a loop once its turn's frames are written."""

    _pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[tuple[asyncio.Transport, bytes]]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def add(cls, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, data: bytes) -> None:
        pending = cls._pending.get(loop)
        if pending is None:
            pending = cls._pending[loop] = []
            loop.call_soon(cls._write, loop)
        pending.append((transport, data))

    @classmethod
    def _write(cls, loop: asyncio.AbstractEventLoop) -> None:
        for transport, data in cls._pending.pop(loop, ()):
            if not transport.is_closing():
                transport.write(data)


class Inbox:
    """What uvicorn's WebSocket protocol asks of its receive queue (`put_nowait`, `get`, `empty`,
    `qsize`), in a list and a `Flag`: an `asyncio.Queue` is three deques and an event, ~3 KiB for
    each open socket. It never holds more than a message or two: uvicorn stops reading the socket
    after each message until the app has taken what is queued."""

    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._ready = Flag()

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class CorkedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol over a `CorkedTransport` (`uvicorn.run(ws=...)`),
    whose per-connection INFO lines are dropped before they are built (`PerConnectionLogger`) and
    which lets go of the upgrade's request and response once the socket is accepted; its receive
    queue is an `Inbox` and its `writable` event a `Flag`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # An adapter where a Logger is declared: `info` and `level` its own, the rest delegated.
        self.logger = self.conn.logger = _QUIET  # type: ignore[assignment]
        # The same primitives, without their deques (~3.7 KiB a socket, for the socket's life).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CorkedTransport(cast(asyncio.Transport, transport), self.loop))

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the upgrade was refused
        if scope is not None:
            scope["extensions"][SEND_TEXT_NOW] = self.send_text_now

    def start_keepalive(self) -> None:
        # uvicorn calls this once, right after it has written the accept. It never reads the
        # upgrade's request or its own response again, and the two hold both sides' headers
        # (~5 KiB) for as long as the socket stays open; the app has its own copy in the scope.
        # websockets' parser holds the request too (the generator that read it keeps it as a
        # local while it goes on reading frames), so its headers are emptied, not only let go.
        if self.request is not None:
            self.request.headers.clear()
        self.request = self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def send_text_now(self, text: str, alone: bool = False) -> bool:
        """A text frame written now, as `send` writes one; False when `send` would do more.
        `alone`: nothing else of this loop turn joins it (`CorkedTransport.write_alone`)."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        conn = self.conn
        if conn.state is OPEN and not (
            conn.writes or conn.extensions or conn.expect_continuation_frame or conn.debug
        ):
            data = text_frame(text.encode())  # all that websockets' `send_text` would do here
        else:  # websockets' to see to: a state to refuse in, an extension, its own writes, a debug log
            try:
                conn.send_text(text.encode())
            except InvalidState:
                return False
            data = b"".join(conn.data_to_send())
        transport = cast(CorkedTransport, self.transport)
        if alone:
            transport.write_alone(data)
        else:
            transport.write(data)
        return True


def text_frame(payload: bytes) -> bytes:
    """A server's final, unmasked text frame of `payload` (RFC 6455 5.2): the bytes websockets'
    `Frame(TEXT, payload).serialize(mask=False, extensions=[])` makes (~1.5 µs), in ~0.3 µs."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload
