"""The Alembic migrations build exactly the schema the models describe, in the `catalog` schema,
and exactly the schema recorded in `catalog_schema.txt` (PostgreSQL's own description of it: every
column in order with its type, nullability, default and generated expression, every constraint and
index definition), so a change to how the migrations are written cannot change what they build.

After a new migration, record the new schema and review the diff of catalog_schema.txt:
`PARLEY_RECORD_SCHEMA=1 uv run --frozen pytest services/catalog/tests/test_migrations.py`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from parley_catalog.db import SCHEMA
from parley_catalog.migrate import MIGRATIONS, upgrade
from parley_catalog.models import Base
from parley_common.kit import migrations
from parley_common.kit.db import make_engine
from parley_devstack.postgres import create_database, drop_database, with_database

RECORDED = Path(__file__).parent / "catalog_schema.txt"

_COLUMNS = text(
    """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid)
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = :s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum
    """
)
_CONSTRAINTS = text(
    """
    SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = k.connamespace
    WHERE n.nspname = :s ORDER BY c.relname, k.conname
    """
)
_INDEXES = text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s ORDER BY 1, 2")


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, _: type_ != "schema" or name == SCHEMA,
            "version_table_schema": SCHEMA,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_match_migrations(migrated: Any) -> None:
    engine = make_engine(migrated.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            query = text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s")
            tables = set((await conn.execute(query, {"s": SCHEMA})).scalars())
    finally:
        await engine.dispose()
    assert diff == []
    assert tables == {
        "agents",
        "templates",
        "tools",
        "conversations",
        "messages",
        "processed_events",
        "agent_tests",
        "agent_test_runs",
        "agent_test_messages",
        "agent_test_remarks",
        "agent_test_settings",
        "alembic_version",
    }


async def _describe(database_url: str) -> str:
    """The catalog schema as PostgreSQL describes it, one line per column, constraint and index."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            lines = []
            for kind, query in (("column", _COLUMNS), ("constraint", _CONSTRAINTS), ("index", _INDEXES)):
                for row in await conn.execute(query, {"s": SCHEMA}):
                    lines.append(" | ".join([kind, *(str(v) for v in row)]))
    finally:
        await engine.dispose()
    return "\n".join(lines) + "\n"


async def test_migrations_build_the_recorded_schema(migrated: Any) -> None:
    """Upgrade a fresh database, downgrade it to nothing and upgrade it again: both upgrades give
    the recorded schema, the downgrade leaves no table but Alembic's."""
    name = f"parley_schema_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, migrated.database_url, name, if_missing=False)
    url = with_database(migrated.database_url, name)
    try:
        await asyncio.to_thread(upgrade, url)
        first = await _describe(url)
        if os.environ.get("PARLEY_RECORD_SCHEMA"):
            RECORDED.write_text(first)
        config = migrations.alembic_config(MIGRATIONS, url)
        await asyncio.to_thread(command.downgrade, config, "base")
        emptied = await _describe(url)
        await asyncio.to_thread(upgrade, url)
        again = await _describe(url)
    finally:
        await asyncio.to_thread(drop_database, migrated.database_url, name)
    assert first == RECORDED.read_text()
    assert {line.split(" | ")[1] for line in emptied.splitlines()} == {"alembic_version"}
    assert again == first
