"""The catalog's tables base. The catalog owns the `catalog` schema and nothing else."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Index, text
from sqlalchemy.orm import DeclarativeBase

from parley_common.kit.db import TYPE_ANNOTATION_MAP, Database, schema_metadata

SCHEMA = "catalog"


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)
    type_annotation_map = TYPE_ANNOTATION_MAP


def unique_per_owner(name: str, owner: str, column: str, *, not_null: Sequence[str] = ()) -> Index:
    """A unique index on (`owner`, `column`) over the live (not soft-deleted) rows that `owner`
    owns and that have each column of `not_null`: a deleted row frees its value."""
    where = " AND ".join(["deleted_at IS NULL", *(f"{c} IS NOT NULL" for c in [*not_null, owner])])
    return Index(name, owner, column, unique=True, postgresql_where=text(where))


__all__ = ["SCHEMA", "Base", "Database", "unique_per_owner"]
