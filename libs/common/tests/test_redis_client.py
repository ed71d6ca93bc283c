"""`redis_client`'s connections: a command's write is bounded by `socket_timeout` without a task of
its own (`_WriteWithoutTask`), for every kind of connection a URL picks, with redis-py's errors."""

from __future__ import annotations

import asyncio
import signal

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley_common.redis_client import _WriteWithoutTask, make_pool, make_redis
from parley_common.settings import CommonSettings
from parley_devstack.servers import ValkeyServer


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_every_kind_of_connection_writes_without_a_task(url: str, base: type) -> None:
    pool = make_pool(CommonSettings(redis_url=url))
    assert issubclass(pool.connection_class, _WriteWithoutTask)
    assert issubclass(pool.connection_class, base)
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(conn, base)


async def test_commands_make_no_task_for_their_write(valkey: ValkeyServer) -> None:
    redis = make_redis(CommonSettings(redis_url=valkey.url))
    made: list[object] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> asyncio.Task[object]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    try:
        await redis.set("warm", "up")  # connects (and its first health check) outside the count
        loop.set_task_factory(counting)  # type: ignore[arg-type]
        assert await redis.set("k", "v", ex=60)
        assert await redis.get("k") == b"v"
        assert made == []
    finally:
        loop.set_task_factory(factory)
        await redis.aclose()


async def test_a_write_the_server_does_not_take_times_out_as_redis_py_does(valkey: ValkeyServer) -> None:
    settings = CommonSettings(
        redis_url=valkey.url, redis_socket_timeout_s=0.2, redis_retries=0, redis_health_check_interval_s=0
    )
    pool = make_pool(settings)
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    await conn.connect()
    valkey.signal(signal.SIGSTOP)  # a Redis that hangs: it reads nothing more, the write fills the buffers
    try:
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            await conn.send_packed_command(b"x" * (64 * 1024 * 1024), check_health=False)
        assert not conn.is_connected  # a write cut short: the connection is not kept
    finally:
        valkey.signal(signal.SIGCONT)
        await conn.disconnect()
        await pool.aclose()
