from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from parley_auth.db import Base, new_id, utcnow


class ClientToken(Base):
    """A minted client token (the JWT's `jti`), kept so it can be revoked before it expires."""

    __tablename__ = "client_tokens"

    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_id)
    api_key_id: Mapped[UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[UUID | None]
    agent_id: Mapped[str] = mapped_column(String(200))
    env: Mapped[str] = mapped_column(String(16))
    token_type: Mapped[str] = mapped_column(String(8))
    data: Mapped[dict[str, object] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
