"""agents.slug: Octavus agents by slug within their owner

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("slug", sa.String(), nullable=True), schema="catalog")
    op.create_index(
        "ix_agents_user_slug",
        "agents",
        ["owner_user_id", "slug"],
        unique=True,
        schema="catalog",
        postgresql_where=sa.text("deleted_at IS NULL AND slug IS NOT NULL AND owner_user_id IS NOT NULL"),
    )
    op.create_index(
        "ix_agents_org_slug",
        "agents",
        ["owner_org_id", "slug"],
        unique=True,
        schema="catalog",
        postgresql_where=sa.text("deleted_at IS NULL AND slug IS NOT NULL AND owner_org_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_agents_org_slug", table_name="agents", schema="catalog")
    op.drop_index("ix_agents_user_slug", table_name="agents", schema="catalog")
    op.drop_column("agents", "slug", schema="catalog")
