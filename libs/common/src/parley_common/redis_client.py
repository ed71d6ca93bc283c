"""The one way a Parley process talks to Redis: a bounded, blocking pool with retries.

Every service builds its client here (the auth rate limiter, the gateway, the runtime's session and
Octavus stores), so all of them behave alike when Redis is busy or restarts:

- **Bounded, blocking pool.** At most `redis_max_connections` connections per process; a command
  that finds them all busy waits up to `redis_pool_timeout_s` for one (a burst queues) and then
  fails with `redis.ConnectionError`, which the services answer as `service.unavailable` (503),
  never as an internal pool error.
- **Dead connections are dropped at once.** A command that fails with a connection error or a
  timeout (after a Redis restart every pooled connection is dead) closes that connection and is
  retried on a fresh one, `redis_retries` times with a short jittered backoff; an idle connection
  is also checked (PING) before use after `redis_health_check_interval_s`. While Redis is down a
  command therefore fails within about a second, and works again as soon as Redis is back.
- **Short connect and socket timeouts**, so neither a readiness probe nor a request hangs on a
  Redis that does not answer. A command's write is bounded by `asyncio.timeout` instead of
  redis-py's `asyncio.wait_for` (`_WriteWithoutTask`): the same bound and the same errors, without
  a task, a future and a timer made for every command (~55 µs of CPU a command, a third of what
  redis-py costs per command).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from redis._parsers.base import BaseParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley_common.settings import CommonSettings


class _WriteWithoutTask(AbstractConnection):
    """redis-py's `send_packed_command` (redis 7.x, the same steps and errors), its write bounded
    by `asyncio.timeout(socket_timeout)` in the caller's task rather than `asyncio.wait_for`, which
    runs every write in a task of its own. Mixed into whichever connection class the URL picks."""

    __slots__ = ()

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer = self._writer
            assert writer is not None  # connected above
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():  # the socket took less than all of it
                async with asyncio.timeout(self.socket_timeout or None):
                    await writer.drain()
            else:  # nothing to wait for (still raises the error of a connection lost meanwhile)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else (e.args[0], e.args[1])
            raise RedisConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            # A write cut short cannot be resumed: the connection is not kept (as redis-py does).
            await self.disconnect(nowait=True)
            raise


def _without_write_task(connection_class: type[Any]) -> type[Any]:
    if issubclass(connection_class, _WriteWithoutTask):
        return connection_class
    return type(connection_class.__name__, (_WriteWithoutTask, connection_class), {})


def make_pool(settings: CommonSettings) -> BlockingConnectionPool:
    """The process's connection pool (also what a library such as `limits` is given)."""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5),
            settings.redis_retries,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
        # No `CLIENT SETINFO` at connect: redis-py reads its own version from the package metadata
        # for each new connection object (~1 ms of CPU, ~7 ms on a loaded machine) and sends two
        # more commands; a pool grows by many connections at once under a burst of openings.
        driver_info=None,
    )
    pool.connection_class = _without_write_task(pool.connection_class)
    return pool


def make_redis(settings: CommonSettings) -> Redis:
    """A client on a pool of its own (one per process: build it once and share it)."""
    return Redis(connection_pool=make_pool(settings))


# ------------------------------------------------------------------------------------ a line


class _Push:
    """A RESP3 push message (`>`): not the reply to any command; skipped."""


_PUSH = _Push()


def _pack(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _error(text: bytes) -> Exception:
    """An error reply as redis-py's exception for it (`NoScriptError`, `BusyLoadingError`, ...)."""
    error: Exception = BaseParser.parse_error(text.decode(errors="replace"))  # type: ignore[no-untyped-call]
    return error


def _parse(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One RESP2/RESP3 reply from `pos`: (value, where the next one starts), None if incomplete.
    An error reply is returned as redis-py's exception for it (not raised)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line, after = buf[pos], bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x3A or kind == 0x28:  # ':' integer, '(' big number
        return int(line), after
    if kind == 0x2B:  # '+' simple string
        return line, after
    if kind == 0x2D:  # '-' error
        return _error(line), after
    if kind in (0x24, 0x3D, 0x21):  # '$' bulk, '=' verbatim, '!' bulk error
        size = int(line)
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            return None
        data = bytes(buf[after : after + size])
        after += size + 2
        if kind == 0x21:
            return _error(data), after
        return (data[4:] if kind == 0x3D else data), after
    if kind == 0x5F:  # '_' null
        return None, after
    if kind == 0x2C:  # ',' double
        return float(line), after
    if kind == 0x23:  # '#' boolean
        return line == b"t", after
    if kind in (0x2A, 0x7E, 0x3E, 0x25, 0x7C):  # '*' array, '~' set, '>' push, '%' map, '|' attribute
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count * 2 if kind in (0x25, 0x7C) else count):
            parsed = _parse(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        if kind == 0x3E:
            return _PUSH, after
        if kind == 0x25:
            return dict(zip(items[::2], items[1::2], strict=True)), after
        if kind == 0x7C:  # attributes come before the reply they describe: the reply is next
            return _parse(buf, after)
        return items, after
    raise InvalidResponse(f"Protocol error, got {chr(kind)!r} as reply type byte")


class _Link(asyncio.Protocol):
    """One connection of a `RedisLine`: the commands written and waiting for their replies, in
    order (Redis answers a connection's commands in the order it got them)."""

    def __init__(self, transport: asyncio.Transport, timeout: float | None) -> None:
        self.transport = transport
        self.timeout = timeout
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.buf = bytearray()
        self.replies = 0  # read so far (the watchdog's measure of progress)
        self.closed = False
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.writable: asyncio.Future[None] | None = None  # set while the transport asks to wait
        self._watchdog: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        reply = asyncio.get_running_loop().create_future()
        self.waiting.append(reply)
        self.transport.write(data)
        if self._watchdog is None and self.timeout:
            self._arm()
        return reply

    def _arm(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout or 0, self._check, self.replies)

    def _check(self, replies: int) -> None:
        self._watchdog = None
        if not self.waiting or self.closed:
            return
        if self.replies == replies:  # a command waited a whole `timeout` and no reply came
            self.fail(RedisTimeoutError("Timeout reading from socket"))
        else:
            self._arm()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                parsed = _parse(buf, pos)
                if parsed is None:
                    break
                value, pos = parsed
                if value is _PUSH:
                    continue
                self.replies += 1
                reply = self.waiting.popleft()  # IndexError: a reply nobody asked for
                if not reply.done():  # its caller may have been cancelled
                    if isinstance(value, Exception):
                        reply.set_exception(value)
                    else:
                        reply.set_result(value)
        except (IndexError, ValueError, InvalidResponse) as exc:
            self.fail(RedisConnectionError(f"Protocol error: {exc!r}"))
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Connection closed by server."))

    def fail(self, error: Exception) -> None:
        """The connection is given up: every command waiting on it fails with `error` (it may or
        may not have run: only commands safe to repeat go over a line)."""
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.resume_writing()
        waiting, self.waiting = self.waiting, deque()
        for reply in waiting:
            if not reply.done():
                reply.set_exception(error)
        self.transport.close()


class RedisLine:
    """One connection of its own, beside the pool, for a hot command every task of the process
    sends (the runtime's state save): a command is written at once and its reply handed back from
    the connection's data callback, in order, so there is no pool checkout and release, no retry
    wrapper, no task and no reader coroutine per command. Commands from many tasks share it
    (pipelined: written one after the other, answered in that order).

    The connection is made as the pool makes its own (`connection_class`, `connection_kwargs`:
    the URL's host or socket, TLS, credentials, database, protocol; the connect timeout and its
    retries), then its transport is handed to `_Link`. The same errors as through the pool: the
    connection lost fails every command waiting on it with redis-py's `ConnectionError`; no reply
    for `socket_timeout` while a command waits (checked once per `socket_timeout`, so within one
    to two of them) fails them with its `TimeoutError` and drops the connection; an error reply is
    raised as redis-py raises it (`NoScriptError`, `BusyLoadingError`, `ResponseError`, ...).
    The next command connects again. Commands are not retried here: a caller waits an outage out
    (`parley_common.outages.until_available`), so only commands safe to repeat belong here."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._pooled = Redis(connection_pool=pool)  # `write`'s way round a lost command
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        kwargs = pool.connection_kwargs
        self._timeout: float | None = kwargs.get("socket_timeout")

    async def execute(self, *args: bytes | str | int) -> Any:
        link = self._link
        if link is None or link.closed:
            link = await self._connect()
        reply = link.send(_pack(args))
        if link.writable is not None:  # the transport's buffer is full: Redis is not reading
            try:
                async with asyncio.timeout(self._timeout or None):
                    await asyncio.shield(link.writable)
            except TimeoutError:
                link.fail(RedisTimeoutError("Timeout writing to socket"))
        return await reply

    async def write(self, *args: bytes | str | int) -> None:
        """A write whose reply is not needed (`SET ... EX`), over the line; if the line's
        connection failed or timed out under it (the line retries its connecting, never a
        command), once more through the pool, whose retries ride out a Redis restart as every
        other command's do. Only for writes safe to repeat, from a caller that does not wait an
        outage out itself (a handshake)."""
        try:
            await self.execute(*args)
        except (RedisConnectionError, RedisTimeoutError):
            await self._pooled.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _connect(self) -> _Link:
        async with self._lock:
            if self._closed:
                raise RedisConnectionError("The line is closed.")
            link = self._link
            if link is not None and not link.closed:
                return link  # another task connected meanwhile
            pool = self._pool
            connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
            await connection.connect()  # type: ignore[no-untyped-call]
            writer = connection._writer
            reader = connection._reader
            assert writer is not None and reader is not None
            transport = writer.transport
            link = _Link(transport, self._timeout)  # type: ignore[arg-type]
            transport.set_protocol(link)
            # The transport is the link's now: redis-py's connection, once collected, would close
            # the writer it still names (`AbstractConnection.__del__`), and asyncio's stream
            # writer closes its transport when it is collected: the link keeps the streams.
            link.streams = (reader, writer)
            connection._writer = connection._reader = None
            leftover = bytes(getattr(reader, "_buffer", b""))
            if leftover:  # nothing is expected after the handshake's replies
                link.data_received(leftover)
            self._link = link
            return link

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            if self._link is not None:
                self._link.fail(RedisConnectionError("The line is closed."))
                self._link = None


class LineScript:
    """A Lua script run over a `RedisLine` (`EVALSHA`, and `EVAL` when Redis does not know it: a
    restarted Redis has no scripts, as redis-py's `Script` does)."""

    def __init__(self, line: RedisLine, script: str) -> None:
        self.line = line
        self.script = script
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        try:
            return await self.line.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.line.execute("EVAL", self.script, len(keys), *keys, *args)
