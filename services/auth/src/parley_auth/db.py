"""The auth service's tables base. Auth owns the `auth` schema, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from parley_common.kit.db import TYPE_ANNOTATION_MAP, Database, schema_metadata

SCHEMA = "auth"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> UUID:
    return uuid4()


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)
    type_annotation_map = TYPE_ANNOTATION_MAP


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


__all__ = ["SCHEMA", "Base", "Database", "TimestampMixin", "new_uuid", "utcnow"]
