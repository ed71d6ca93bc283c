"""`parley_devstack.testing`: `infra` gives embedded servers by default, given URLs when set, and
always a fresh PostgreSQL database of its own; `subscribed` waits until the server has a
connection's subscriptions."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis

from parley_devstack.postgres import with_database
from parley_devstack.servers import tcp_open
from parley_devstack.testing import infra, subscribed

URL_VARS = ("NATS_URL", "REDIS_URL", "DATABASE_URL")


async def _database_exists(server_url: str, name: str) -> bool:
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_embedded_infra_then_reuse_of_given_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in URL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PARLEY_TEST_INFRA", "embedded")

    with infra() as outer:
        for url in (outer.nats_url, outer.redis_url, outer.database_url):
            assert "127.0.0.1:" in url
        nc = await nats.connect(outer.nats_url)
        await nc.jetstream().account_info()  # JetStream is on
        await nc.close()
        client = aioredis.Redis.from_url(outer.redis_url)
        assert await client.ping()
        await client.aclose()
        conn = await asyncpg.connect(outer.database_url)
        outer_db = await conn.fetchval("SELECT current_database()")
        await conn.close()
        assert outer_db.startswith("parley_test_")

        # With the URLs given, nothing new starts, but PostgreSQL still gets a database of its own.
        for var, value in zip(URL_VARS, (outer.nats_url, outer.redis_url, outer.database_url), strict=True):
            monkeypatch.setenv(var, value)
        with infra() as inner:
            assert (inner.nats_url, inner.redis_url) == (outer.nats_url, outer.redis_url)
            assert inner.database_url != outer.database_url
            inner_db = inner.database_url.rsplit("/", 1)[1]
            assert await _database_exists(outer.database_url, inner_db)
        assert not await _database_exists(outer.database_url, inner_db)  # dropped at the end

    # Everything the outer block started is gone.
    for url in (outer.nats_url, outer.redis_url, outer.database_url):
        port = int(url.split("127.0.0.1:")[1].split("/")[0])
        assert not tcp_open(port), url


def test_infra_env_for_subprocesses() -> None:
    from parley_devstack.testing import Infra

    value = Infra("nats://n", "redis://r", "postgresql://p")
    assert value.env() == {"NATS_URL": "nats://n", "REDIS_URL": "redis://r", "DATABASE_URL": "postgresql://p"}


def test_unknown_infra_mode_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in URL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PARLEY_TEST_INFRA", "cloud")
    with pytest.raises(ValueError, match="PARLEY_TEST_INFRA"), infra():
        pass


def test_the_plugin_provides_the_infra_fixture(infra: object) -> None:
    from parley_devstack.testing import Infra

    assert isinstance(infra, Infra)


async def _protocol_recorder(received: list[str]) -> tuple[asyncio.Server, int]:
    """A NATS server as far as a connect, a subscribe and a flush go: it records each command
    line in the order it arrives and answers every PING."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b'INFO {"server_id":"recorder","version":"2.10.0","max_payload":1048576,"headers":true}\r\n'
        )
        while line := await reader.readline():
            received.append(line.decode().split(" ", 1)[0].strip())
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_subscribed_returns_only_after_the_server_answered_a_ping_sent_after_the_sub() -> None:
    received: list[str] = []
    server, port = await _protocol_recorder(received)
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    try:

        async def ignore(_msg: object) -> None:
            pass

        del received[:]  # the connect's own CONNECT and PING
        await nc.subscribe("some.subject", cb=ignore)
        await subscribed(nc)
        # Every PING answered is before the helper returned; the last one follows the SUB.
        assert "SUB" in received
        assert received.index("SUB") < len(received) - 1 - received[::-1].index("PING")
    finally:
        await nc.close()
        server.close()
        await server.wait_closed()
