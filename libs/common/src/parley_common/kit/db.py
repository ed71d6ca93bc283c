"""The database pieces of a service that owns tables (auth, catalog): one schema per service.

Each service declares its own base with these pieces, so its tables stay in its own metadata:

    class Base(DeclarativeBase):
        metadata = schema_metadata(SCHEMA)
        type_annotation_map = TYPE_ANNOTATION_MAP
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import DateTime, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

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


def make_engine(database_url: str, pool_size: int = 5, max_overflow: int | None = None) -> AsyncEngine:
    # pre_ping: a connection dropped by a PostgreSQL restart is replaced instead of failing a request.
    return create_async_engine(
        async_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True,
    )


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
