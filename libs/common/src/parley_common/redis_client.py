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
from collections.abc import Iterable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
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
    )
    pool.connection_class = _without_write_task(pool.connection_class)
    return pool


def make_redis(settings: CommonSettings) -> Redis:
    """A client on a pool of its own (one per process: build it once and share it)."""
    return Redis(connection_pool=make_pool(settings))
