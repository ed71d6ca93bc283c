from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from parley_auth.db import Base, TimestampMixin, new_uuid, utcnow


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        # Emails are unique among live accounts only: a deleted account frees its address.
        Index(
            "uq_users_email_live",
            text("lower(email)"),
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_uuid)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    password_hash: Mapped[str] = mapped_column(String(255))
    deleted_at: Mapped[datetime | None]


class UserSecret:
    """A token handed to a user that expires: only its keyed hash is stored."""

    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class UserSession(UserSecret, Base):
    """A cookie session."""

    __tablename__ = "sessions"

    revoked_at: Mapped[datetime | None]
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))


class PasswordResetToken(UserSecret, Base):
    __tablename__ = "password_reset_tokens"

    used_at: Mapped[datetime | None]
