"""The database pieces of a service that owns tables (auth, catalog): one schema per service.

Each service declares its own base with these pieces, so its tables stay in its own metadata:

    class Base(DeclarativeBase):
        metadata = schema_metadata(SCHEMA)
        type_annotation_map = TYPE_ANNOTATION_MAP
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import DateTime, MetaData, event, exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from parley_common.errors import ErrorCode, ParleyError
from parley_common.settings import CommonSettings

# Constraint names Alembic can find again; a named check constraint `x` on table `t` is `ck_t_x`.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Timestamps are always aware; JSON-shaped columns are JSONB.
TYPE_ANNOTATION_MAP: dict[Any, Any] = {
    datetime: DateTime(timezone=True),
    dict[str, Any]: JSONB,
    list[Any]: JSONB,
}


class DatabaseSettings(CommonSettings):
    """Settings of a service with a database (`PARLEY_DB_POOL_SIZE`, `PARLEY_DB_MAX_OVERFLOW`)."""

    db_pool_size: int = Field(default=5, ge=1)
    # Connections opened beyond the pool under a burst; unset means as many as the pool holds.
    db_max_overflow: int | None = Field(default=None, ge=0)


def schema_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (what operators set) and select the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


# A pooled connection idle longer than this is pinged before use (see `_checked_out`).
PING_IDLE_S = 30.0


def make_engine(database_url: str, pool_size: int = 5, max_overflow: int | None = None) -> AsyncEngine:
    engine = create_async_engine(
        async_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
    )
    event.listen(engine.sync_engine.pool, "checkout", _checked_out)
    event.listen(engine.sync_engine.pool, "checkin", _checked_in)
    return engine


def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """A connection PostgreSQL closed (a restart, an idle timeout, a terminated backend) is replaced
    before use instead of failing the request: asyncpg has seen it close (the server says so and
    ends the socket), so no round trip is needed to know. `pool_pre_ping` asked every time, and
    SQLAlchemy's asyncpg ping is three statements (`BEGIN`, `;`, `ROLLBACK`): ~3 round trips per
    checkout, a sixth of the catalog's CPU while it stored transcripts (docs/performance.md,
    change 80). A connection idle for `PING_IDLE_S` (long enough for a peer to vanish without a
    word) is still pinged."""
    if dbapi_connection._connection.is_closed():
        raise exc.DisconnectionError("the server closed the connection")
    idle_since = record.info.get("checked_in_at")
    if idle_since is not None and time.monotonic() - idle_since > PING_IDLE_S:
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError(f"ping failed: {error}") from error


def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["checked_in_at"] = time.monotonic()


class Database:
    """A service's engine and session factory (`async with db.sessions() as session`)."""

    def __init__(self, database_url: str, pool_size: int = 5, max_overflow: int | None = None) -> None:
        self.engine = make_engine(database_url, pool_size, max_overflow)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        return cls(settings.database_url, settings.db_pool_size, settings.db_max_overflow)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def flush_unique(db: AsyncSession, conflict: ErrorCode, params: dict[str, Any] | None = None) -> None:
    """Flush, where a unique constraint decides (the check before it can lose a race to a
    concurrent request): a violation rolls the session back and is raised as `conflict`."""
    try:
        await db.flush()
    except IntegrityError as exc:
        await db.rollback()
        raise ParleyError(conflict, params=params) from exc
