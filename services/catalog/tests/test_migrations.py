"""The Alembic migrations build exactly the schema the models describe, in the `catalog` schema."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from parley_catalog.db import SCHEMA
from parley_catalog.models import Base
from parley_common.kit.db import make_engine


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
