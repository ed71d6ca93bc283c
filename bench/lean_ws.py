"""A lean WebSocket client for the benches' own sessions: RFC 6455 text messages, no extensions.

The load generator shares the stack's two cores, so what a client spends is CPU the stack does
not get (docs/performance.md, "The bench's clients on the same two cores"). websockets' asyncio
client costs a reader task per socket, a generator-based parser per frame and an assembler with
its own futures per message. This reads in the transport's `data_received`: frames are cut out
of the buffer there, the server's pings are answered and its close echoed at once, and text
messages are queued for `recv`, or dropped unread while the session is `held` (no task of its
own). A browser's WebSocket does the same in C++ on a machine of its own.

The opening is a plain HTTP/1.1 upgrade, checked as RFC 6455 §4.1 asks (status 101, the
`Sec-WebSocket-Accept` of the key sent); anything else raises `HandshakeRefused` with the status
(the edge's 503 when it sheds load). What the client sends is masked, as a client must.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections import deque
from typing import cast
from urllib.parse import urlsplit

from websockets.speedups import apply_mask  # websockets' C helper: the masking XOR

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL_CLOSURE = 1000
CLOSE_TIMEOUT_S = 10.0  # for the server's close frame after ours
_HEAD_LIMIT = 64 * 1024  # an upgrade response's headers never come near this


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than a WebSocket."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class ConnectionClosed(Exception):
    """The socket is closed (by either side); `code` is the close frame's, 1006 if there was none."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed ({code})")
        self.code = code


class ProtocolViolation(Exception):
    """The server sent something RFC 6455 forbids it (a masked frame, a bad opcode)."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked with a fresh key (RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


def accept_of(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class LeanSocket(asyncio.Protocol):
    """One client WebSocket. Open it with `LeanSocket.connect(url)`."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._messages: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._binary = False  # the message being read is binary
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None  # set once closed
        self._close_sent = False
        self.held = False  # drop text messages unread (a held, silent session)

    # ---------------------------------------------------------------- opening

    @classmethod
    async def connect(cls, url: str) -> LeanSocket:
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None:
            raise ValueError(f"a ws:// URL is needed, not {url!r}")
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        loop = asyncio.get_running_loop()
        transport, socket = await loop.create_connection(lambda: cls(key), parts.hostname, port)
        transport.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        try:
            await socket._upgraded
        except BaseException:  # refused, or the caller's timeout
            transport.abort()
            raise
        return socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def _upgrade(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _HEAD_LIMIT:
                raise HandshakeRefused(0, "response headers too long")
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            raise HandshakeRefused(status, parts[2] if len(parts) > 2 else status_line)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_of(self._key):
            raise HandshakeRefused(status, "Sec-WebSocket-Accept does not match the key")
        if headers.get("sec-websocket-extensions"):
            raise HandshakeRefused(status, "an extension was not asked for")
        self._upgraded.set_result(None)

    # ---------------------------------------------------------------- reading

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            if not self._upgraded.done():
                self._upgrade()
                if not self._upgraded.done():
                    return
            self._frames()
        except (HandshakeRefused, ProtocolViolation) as exc:
            if not self._upgraded.done():
                self._upgraded.set_exception(exc)
            self._fail(1002)

    def _frames(self) -> None:
        buffer = self._buffer
        at = 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            if second & 0x80:
                raise ProtocolViolation("a server's frame is never masked")
            length, head = second & 0x7F, 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            if len(buffer) - at < head + length:
                break
            payload = bytes(buffer[at + head : at + head + length])
            at += head + length
            self._frame(first & 0x80 != 0, first & 0x0F, payload)
            if self._closed.done():
                break
        del buffer[:at]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._write(client_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass  # this client sends no pings of its own
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._send_close(payload[:2])  # the server's close first: echo its code, then hang up
            self._finish(code)
            if self._transport is not None:
                self._transport.close()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if opcode != OP_CONT and self._fragments:
                raise ProtocolViolation("a new message began inside a fragmented one")
            if opcode == OP_CONT and not self._fragments:
                raise ProtocolViolation("a continuation frame with no message to continue")
            if opcode != OP_CONT:
                self._binary = opcode == OP_BINARY
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments.clear()
                if not self.held and not self._binary:  # the benches read text; audio is dropped
                    try:
                        self._messages.append(whole.decode())
                    except UnicodeDecodeError:
                        raise ProtocolViolation("a text message that is not UTF-8") from None
                    self._wake()
        else:
            raise ProtocolViolation(f"unknown opcode {opcode:#x}")

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def hold(self) -> None:
        """From now on, drop text messages unread (and those queued): a held, silent session."""
        self.held = True
        self._messages.clear()

    def queued(self) -> str | None:
        """The next text message if one is here already (no wait, no coroutine)."""
        return self._messages.popleft() if self._messages else None

    async def recv(self) -> str:
        """The next text message (in order); raises `ConnectionClosed` once none will come."""
        while not self._messages:
            if self.close_code is not None:
                raise ConnectionClosed(self.close_code)
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._messages.popleft()

    # ---------------------------------------------------------------- writing and closing

    def send(self, text: str) -> None:
        if self.close_code is not None or self._close_sent:
            raise ConnectionClosed(self.close_code or 1006)
        self._write(client_frame(OP_TEXT, text.encode()))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    @property
    def is_open(self) -> bool:
        return self.close_code is None and self._upgraded.done() and not self._upgraded.exception()

    async def close(self) -> None:
        """The closing handshake: our close frame, then the server's (or its hang-up)."""
        if self.close_code is None:
            self._send_close(NORMAL_CLOSURE.to_bytes(2, "big"))
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(self._closed)
            except TimeoutError:
                self._fail(1006)
        if self._transport is not None:
            self._transport.close()

    def _send_close(self, code: bytes) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(client_frame(OP_CLOSE, code))

    def abort(self) -> None:
        self._fail(1006)

    def _fail(self, code: int) -> None:
        self._finish(code)
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._upgraded.done():
            self._upgraded.set_exception(ConnectionClosed(1006))
        self._finish(1006)
