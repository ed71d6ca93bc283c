from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from parley_auth.db import Base, new_uuid, utcnow


class ClientToken(Base):
    """A minted client token (the JWT's `jti`), kept so it can be revoked before it expires.

    It lives only as long as the credential at the root of its minting: an API key
    (`POST /chat/tokens`, `/voice/tokens`, `/api/realtime-token` with a key) or a browser session
    (`/api/realtime-token` from a signed-in page). A token minted by another client token
    (`/api/realtime-token` with one) inherits that token's root. Exactly one root is set.
    """

    __tablename__ = "client_tokens"
    __table_args__ = (CheckConstraint("(api_key_id IS NULL) <> (session_id IS NULL)", name="one_root"),)

    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_uuid)
    api_key_id: Mapped[UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[UUID | None]
    agent_id: Mapped[str] = mapped_column(String(200))
    env: Mapped[str] = mapped_column(String(16))
    token_type: Mapped[str] = mapped_column(String(8))
    data: Mapped[dict[str, object] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
