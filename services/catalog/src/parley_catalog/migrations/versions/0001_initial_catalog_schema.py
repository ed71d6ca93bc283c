"""initial catalog schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 15:20:45.687207
"""

from collections.abc import Sequence

import sqlalchemy as sa

from parley_catalog.migration_columns import (
    check,
    create_index,
    create_table,
    drop_table,
    integer,
    jsonb,
    lifetime,
    live_owner_indexes,
    one_owner,
    owned_by,
    search,
    string,
    timestamp,
    unique_per_owner,
    uuid,
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_table(
        "agents",
        *owned_by(),
        uuid("template_id", null=True),
        jsonb("config"),
        jsonb("secrets"),
        jsonb("blueprint"),
        jsonb("protocol", null=True),
        string("status"),
        integer("version"),
        search(
            "to_tsvector('simple'::regconfig, coalesce(config->>'name', '') || ' ' || "
            "coalesce(config->>'description', ''))"
        ),
        *lifetime(),
        check("agents", "status", "status IN ('draft', 'live', 'archived')"),
        one_owner("agents"),
    )
    live_owner_indexes("agents")
    create_index("ix_agents_search", "agents", ["search"], postgresql_using="gin")
    create_table(
        "conversations",
        uuid("id"),
        uuid("agent_id", null=True),
        string("status"),
        string("channel", null=True),
        uuid("user_id", null=True),
        string("summary", null=True),
        string("end_reason", null=True),
        timestamp("started_at", null=True),
        timestamp("ended_at", null=True),
        timestamp("updated_at"),
        timestamp("deleted_at", null=True),
        check("conversations", "status", "status IN ('active', 'ended')"),
    )
    create_index(
        "ix_conversations_agent_started",
        "conversations",
        ["agent_id", sa.literal_column("started_at DESC"), sa.literal_column("id DESC")],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    create_table(
        "messages",
        uuid("id"),
        uuid("conversation_id"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        string("role"),
        string("content"),
        timestamp("created_at"),
        check("messages", "role", "role IN ('user', 'assistant', 'system', 'tool')"),
    )
    create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq", "id"])
    create_table(
        "processed_events",
        uuid("event_id"),
        string("type"),
        uuid("conversation_id"),
        timestamp("processed_at"),
        key=["event_id"],
    )
    create_table(
        "templates",
        *owned_by(),
        string("name"),
        string("description", null=True),
        jsonb("config"),
        jsonb("secrets"),
        jsonb("blueprint"),
        search("to_tsvector('simple'::regconfig, name || ' ' || coalesce(description, ''))"),
        *lifetime(),
        one_owner("templates"),
    )
    live_owner_indexes("templates")
    create_index("ix_templates_search", "templates", ["search"], postgresql_using="gin")
    create_table(
        "tools",
        *owned_by("owner_agent_id"),
        string("name"),
        string("description"),
        jsonb("parameters"),
        string("url"),
        string("method"),
        jsonb("headers"),
        jsonb("secret_headers"),
        sa.Column("timeout_s", sa.Double(), nullable=False),
        *lifetime(),
        check("tools", "method", "method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')"),
        one_owner("tools", "owner_agent_id"),
    )
    unique_per_owner("tools", "name", ("agent", "org"), "uq_tools_{}_name")


def downgrade() -> None:
    drop_table("tools", "uq_tools_org_name", "uq_tools_agent_name")
    drop_table("templates", "ix_templates_search", "ix_templates_owner_user", "ix_templates_owner_org")
    drop_table("processed_events")
    drop_table("messages", "ix_messages_conversation_seq")
    drop_table("conversations", "ix_conversations_agent_started")
    drop_table("agents", "ix_agents_search", "ix_agents_owner_user", "ix_agents_owner_org")
