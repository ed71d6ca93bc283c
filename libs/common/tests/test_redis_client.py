"""`redis_client`'s connections: a command's write is bounded by `socket_timeout` without a task of
its own (`_WriteWithoutTask`), for every kind of connection a URL picks, with redis-py's errors; and
`RedisLine`, a connection of its own shared by many tasks, with the pool's errors."""

from __future__ import annotations

import asyncio
import gc
import signal
from importlib import metadata
from unittest import mock

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley_common.redis_client import LineScript, RedisLine, _WriteWithoutTask, make_pool, make_redis
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


# ------------------------------------------------------------------------------------ RedisLine


_SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])"


async def test_a_line_answers_each_of_many_tasks_with_its_own_reply(valkey: ValkeyServer) -> None:
    redis = make_redis(CommonSettings(redis_url=valkey.url))
    line = RedisLine(redis.connection_pool)
    try:
        client_id = await line.execute("CLIENT", "ID")
        gc.collect()  # redis-py's connection that made it is gone: the line's connection stays
        replies = await asyncio.gather(*(line.execute("INCRBY", f"n{i}", i) for i in range(200)))
        assert replies == list(range(200))
        assert await line.execute("SET", "k", b"v\r\n" * 1000) == b"OK"
        assert await line.execute("GET", "k") == b"v\r\n" * 1000
        assert await line.execute("GET", "missing") is None
        with pytest.raises(ResponseError):
            await line.execute("INCR", "k")  # an error reply is raised, the line goes on
        # A caller cancelled before its reply: the next caller still gets its own.
        cancelled = asyncio.ensure_future(line.execute("INCRBY", "n1", 10))
        await asyncio.sleep(0)
        cancelled.cancel()
        assert await line.execute("GET", "n1") == b"11"
        # A script Redis does not know (a restarted Redis has none) is sent whole.
        script = LineScript(line, _SCRIPT)
        assert await script(keys=["s", "c"], args=[b"x"]) == 1
        await redis.script_flush()
        assert await script(keys=["s", "c"], args=[b"y"]) == 2
        assert await redis.get("s") == b"y"
        assert await line.execute("CLIENT", "ID") == client_id  # one connection all along
    finally:
        await line.aclose()
        await redis.aclose()


async def test_a_line_fails_over_a_restart_as_the_pool_does_and_connects_again(valkey: ValkeyServer) -> None:
    redis = make_redis(CommonSettings(redis_url=valkey.url, redis_retries=0))
    line = RedisLine(redis.connection_pool)
    try:
        assert await line.execute("SET", "k", "v") == b"OK"
        valkey.stop()
        with pytest.raises(RedisConnectionError):
            await line.execute("GET", "k")
        valkey.restart()
        valkey.wait_ready(30)
        assert await line.execute("SET", "k", "w") == b"OK"
        assert await line.execute("GET", "k") == b"w"
    finally:
        await line.aclose()
        await redis.aclose()


async def test_a_line_times_out_a_reply_that_does_not_come(valkey: ValkeyServer) -> None:
    redis = make_redis(CommonSettings(redis_url=valkey.url, redis_socket_timeout_s=0.2, redis_retries=0))
    line = RedisLine(redis.connection_pool)
    try:
        assert await line.execute("PING") == b"PONG"
        valkey.signal(signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(line.execute("PING"), 2)
        finally:
            valkey.signal(signal.SIGCONT)
        assert await line.execute("PING") == b"PONG"  # a new connection
    finally:
        await line.aclose()
        await redis.aclose()


async def test_a_command_the_line_loses_goes_through_the_pool_and_its_retries(valkey: ValkeyServer) -> None:
    settings = CommonSettings(redis_url=valkey.url, redis_socket_timeout_s=0.2, redis_retries=20)
    redis = make_redis(settings)
    line = RedisLine(redis.connection_pool)
    try:
        await line.write("SET", "k", "over the line", "EX", 60)
        pool = redis.connection_pool
        assert not pool._available_connections and not pool._in_use_connections  # the line's own
        assert await line.execute("GET", "k") == b"over the line"
        # Redis hangs with a command in flight: the line gives up on it after its timeout (it
        # does not retry a command; only its connecting is retried)...
        loop = asyncio.get_running_loop()
        valkey.signal(signal.SIGSTOP)
        loop.call_later(1.0, valkey.signal, signal.SIGCONT)
        with pytest.raises(RedisTimeoutError):
            await line.execute("GET", "k")
        await asyncio.sleep(1.0)
        assert await line.execute("PING") == b"PONG"  # the line connected again
        # ...and the pool's retries carry it once Redis goes on.
        valkey.signal(signal.SIGSTOP)
        loop.call_later(1.0, valkey.signal, signal.SIGCONT)
        await line.write("SET", "k", "through the pool", "EX", 60)
        assert await redis.get("k") == b"through the pool"
        assert 0 < await redis.ttl("k") <= 60
    finally:
        valkey.signal(signal.SIGCONT)
        await line.aclose()
        await redis.aclose()


def test_a_new_connection_neither_reads_package_metadata_nor_sends_client_setinfo() -> None:
    pool = make_pool(CommonSettings(redis_url="redis://127.0.0.1:1/0"))
    with mock.patch.object(metadata, "version", side_effect=AssertionError("metadata read")):
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
    assert connection.driver_info is None
