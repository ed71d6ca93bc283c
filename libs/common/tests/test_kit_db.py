"""A service's database connections (`kit.db.make_engine`): one PostgreSQL closed is replaced before
use, without a round trip to ask; one idle for long is pinged first; a recent one is used at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from parley_common.kit import db
from parley_devstack.postgres import PostgresServer, create_database
from parley_devstack.servers import free_port


async def _one(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT 1"))).scalar()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ping a connection makes."""
    made: list[object] = []
    ping: Any = AsyncAdapt_asyncpg_connection.ping  # untyped in SQLAlchemy

    def counted(self: AsyncAdapt_asyncpg_connection) -> None:
        made.append(self)
        ping(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
    return made


async def test_a_recent_connection_is_used_without_a_ping_and_an_idle_one_is_pinged(
    infra: Any, pings: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(infra.database_url, pool_size=1)
    try:
        for _ in range(3):
            assert await _one(engine) == 1
        assert pings == []
        monkeypatch.setattr(db, "PING_IDLE_S", 0.0)
        assert await _one(engine) == 1
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_connections_the_server_closed_are_replaced_before_use(pg_tmp: Path) -> None:
    """A PostgreSQL restart closes every pooled connection: the next use gets a new one, no error."""
    port = free_port()
    server = PostgresServer(pg_tmp / "data", port=port, durable=True, log_path=pg_tmp / "pg.log")
    server.init()
    server.start()
    try:
        server.wait_ready(30)
        create_database(server.url(), "parley")
        url = server.url("parley")
        engine = db.make_engine(url, pool_size=1)
        bare = create_async_engine(db.async_url(url), pool_size=1)  # no check at all: fails
        try:
            assert await _one(engine) == 1
            assert await _one(bare) == 1
            await asyncio.to_thread(server.stop)  # the loop runs on, as a service's does
            server = PostgresServer(pg_tmp / "data", port=port, durable=True, log_path=pg_tmp / "pg2.log")
            server.start()
            await asyncio.to_thread(server.wait_ready, 30)
            assert await _one(engine) == 1
            with pytest.raises(DBAPIError):
                await _one(bare)
        finally:
            await engine.dispose()
            await bare.dispose()
    finally:
        server.stop()
