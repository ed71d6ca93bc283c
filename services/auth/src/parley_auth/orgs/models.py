from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from parley_auth.db import Base, TimestampMixin, new_uuid


class Org(TimestampMixin, Base):
    __tablename__ = "orgs"
    __table_args__ = (
        Index("uq_orgs_slug_live", "slug", unique=True, postgresql_where=text("deleted_at IS NULL")),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_uuid)
    created_by: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    slug: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32), default="free")
    deleted_at: Mapped[datetime | None]


class Membership(TimestampMixin, Base):
    __tablename__ = "memberships"

    org_id: Mapped[UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
