"""`python -m parley_catalog.migrate [revision]`: bring the catalog schema to head (or a revision)."""

from __future__ import annotations

from pathlib import Path

from parley_common.kit import migrations

MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    migrations.upgrade(MIGRATIONS, database_url, revision)


if __name__ == "__main__":
    migrations.main(MIGRATIONS)
