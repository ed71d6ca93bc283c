"""The catalog's tables base. The catalog owns the `catalog` schema and nothing else."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from parley_common.kit.db import TYPE_ANNOTATION_MAP, Database, schema_metadata

SCHEMA = "catalog"


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)
    type_annotation_map = TYPE_ANNOTATION_MAP


__all__ = ["SCHEMA", "Base", "Database"]
