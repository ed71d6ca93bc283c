"""The `catalog.tools` table: webhook tools owned by an agent or an org."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import CheckConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley_catalog.db import Base, unique_per_owner
from parley_catalog.timeutil import utcnow


class Tool(Base):
    __tablename__ = "tools"
    __table_args__ = (
        CheckConstraint("(owner_agent_id IS NULL) <> (owner_org_id IS NULL)", name="one_owner"),
        CheckConstraint("method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')", name="method"),
        # Names are unique per owner among live tools; a deleted tool frees its name.
        unique_per_owner("uq_tools_agent_name", "owner_agent_id", "name"),
        unique_per_owner("uq_tools_org_name", "owner_org_id", "name"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    owner_agent_id: Mapped[UUID | None]
    owner_org_id: Mapped[UUID | None]
    name: Mapped[str]
    description: Mapped[str]
    parameters: Mapped[dict[str, Any]]
    url: Mapped[str]
    method: Mapped[str]
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Encrypted header values: [{key: header name, ciphertext, masked, description}].
    secret_headers: Mapped[list[Any]] = mapped_column(default=list)
    timeout_s: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
