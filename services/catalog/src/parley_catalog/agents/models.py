"""The `catalog.agents` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import CheckConstraint, Computed, Index, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from parley_catalog.db import Base, unique_per_owner
from parley_catalog.timeutil import utcnow

# Search over the config's name and description. The `simple` dictionary (no stemming, no stop
# words) because agents are written in many languages; queries match word prefixes.
AGENT_SEARCH = (
    "to_tsvector('simple'::regconfig, coalesce(config->>'name', '') || ' ' || "
    "coalesce(config->>'description', ''))"
)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("(owner_user_id IS NULL) <> (owner_org_id IS NULL)", name="one_owner"),
        CheckConstraint("status IN ('draft', 'live', 'archived')", name="status"),
        Index("ix_agents_search", "search", postgresql_using="gin"),
        Index(
            "ix_agents_owner_user", "owner_user_id", "created_at", postgresql_where=text("deleted_at IS NULL")
        ),
        Index(
            "ix_agents_owner_org", "owner_org_id", "created_at", postgresql_where=text("deleted_at IS NULL")
        ),
        # Octavus agents are found by slug within their owner (the API key's project).
        unique_per_owner("ix_agents_user_slug", "owner_user_id", "slug", not_null=["slug"]),
        unique_per_owner("ix_agents_org_slug", "owner_org_id", "slug", not_null=["slug"]),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    owner_user_id: Mapped[UUID | None]
    owner_org_id: Mapped[UUID | None]
    template_id: Mapped[UUID | None]
    # Spec `AgentConfig`, as sent (absent optional fields are absent here too).
    config: Mapped[dict[str, Any]]
    # Encrypted: [{key, description, ciphertext, masked}] (see parley_catalog.secretstore).
    secrets: Mapped[list[Any]] = mapped_column(default=list)
    # Spec `Blueprint` (Kivox graph).
    blueprint: Mapped[dict[str, Any]]
    # Octavus protocol agents: the definition (protocol.yaml parsed, settings.json, prompts), as
    # `parley_common.octavus.AgentDefinition` dumps it. Opaque here; null for blueprint agents.
    protocol: Mapped[dict[str, Any] | None]
    # settings.slug of an Octavus agent (unique per owner among live rows); null for the others.
    slug: Mapped[str | None]
    status: Mapped[str] = mapped_column(default="draft")
    # Increments on every change; runtimes compare it with their cached snapshot.
    version: Mapped[int] = mapped_column(default=1)
    search: Mapped[str] = mapped_column(TSVECTOR, Computed(AGENT_SEARCH, persisted=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
