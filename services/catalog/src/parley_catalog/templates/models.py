"""The `catalog.templates` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import CheckConstraint, Computed, Index, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from parley_catalog.db import Base
from parley_catalog.timeutil import utcnow

TEMPLATE_SEARCH = "to_tsvector('simple'::regconfig, name || ' ' || coalesce(description, ''))"


class Template(Base):
    __tablename__ = "templates"
    __table_args__ = (
        CheckConstraint("(owner_user_id IS NULL) <> (owner_org_id IS NULL)", name="one_owner"),
        Index("ix_templates_search", "search", postgresql_using="gin"),
        Index(
            "ix_templates_owner_user",
            "owner_user_id",
            "created_at",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "ix_templates_owner_org",
            "owner_org_id",
            "created_at",
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    owner_user_id: Mapped[UUID | None]
    owner_org_id: Mapped[UUID | None]
    name: Mapped[str]
    description: Mapped[str | None]
    config: Mapped[dict[str, Any]]
    # Encrypted like agent secrets; never returned (the spec's Template has no secrets), only copied
    # into agents created from the template.
    secrets: Mapped[list[Any]] = mapped_column(default=list)
    blueprint: Mapped[dict[str, Any]]
    search: Mapped[str] = mapped_column(TSVECTOR, Computed(TEMPLATE_SEARCH, persisted=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
