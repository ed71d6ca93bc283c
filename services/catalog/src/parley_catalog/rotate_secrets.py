"""`python -m parley_catalog.rotate_secrets`: re-encrypt every stored secret with the first key.

Rotation: set `PARLEY_CATALOG_SECRET_KEY=new,old` on every replica, run this once, then drop `old`.
Safe to run repeatedly and while the service runs (row by row, each in a short transaction).
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from parley_catalog import secretstore
from parley_catalog.agents.models import Agent
from parley_catalog.crypto import SecretBox
from parley_catalog.db import Database
from parley_catalog.settings import CatalogSettings, get_settings
from parley_catalog.templates.models import Template
from parley_catalog.tools.models import Tool

_TABLES: list[tuple[Any, str]] = [(Agent, "secrets"), (Template, "secrets"), (Tool, "secret_headers")]


async def rotate(settings: CatalogSettings) -> int:
    """Rows re-encrypted (every row holding secrets, deleted ones included)."""
    box = SecretBox(settings.catalog_secret_key)
    db = Database(settings.database_url, pool_size=1)
    count = 0
    try:
        for model, column in _TABLES:
            async with db.sessions() as session:
                ids = list((await session.scalars(select(model.id))).all())
            for row_id in ids:
                async with db.sessions() as session:
                    row = await session.scalar(select(model).where(model.id == row_id).with_for_update())
                    if row is None or not getattr(row, column):
                        continue
                    setattr(row, column, secretstore.rotate(box, getattr(row, column)))
                    await session.commit()
                    count += 1
    finally:
        await db.dispose()
    return count


def main() -> None:
    count = asyncio.run(rotate(get_settings()))
    print(f"re-encrypted the secrets of {count} rows with the first key")


if __name__ == "__main__":
    main()
