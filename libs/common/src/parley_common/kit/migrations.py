"""Alembic for a service's own schema, written once for every service that owns tables.

- `migrations/env.py` of a service is `run(SCHEMA, Base.metadata)`: it creates the schema when
  missing and keeps Alembic's version table inside it, so services never see each other's tables.
- `migrate.py` of a service is `main(Path(__file__).parent / "migrations")`:
  `python -m <service>.migrate [revision]` brings the schema to head (or to a revision).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from parley_common.kit.db import make_engine
from parley_common.settings import CommonSettings


def alembic_config(script_location: Path, database_url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", database_url or CommonSettings().database_url)
    return cfg


def upgrade(script_location: Path, database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, database_url), revision)


def main(script_location: Path) -> None:
    upgrade(script_location, revision=sys.argv[1] if len(sys.argv) > 1 else "head")


def run(schema: str, metadata: MetaData) -> None:
    """The body of a service's `migrations/env.py`: migrate `schema` online, on an async engine."""

    def migrate(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, _: type_ != "schema" or name == schema,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        url = context.config.get_main_option("sqlalchemy.url") or CommonSettings().database_url
        engine = make_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
        await engine.dispose()

    asyncio.run(main())
