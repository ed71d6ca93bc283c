"""agents.slug: Octavus agents by slug within their owner

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from parley_catalog.migration_columns import SCHEMA, drop_index, string, unique_per_owner

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", string("slug", null=True), schema=SCHEMA)
    unique_per_owner("agents", "slug", ("user", "org"), "ix_agents_{}_slug", also="slug IS NOT NULL AND ")


def downgrade() -> None:
    drop_index("ix_agents_org_slug", "agents")
    drop_index("ix_agents_user_slug", "agents")
    op.drop_column("agents", "slug", schema=SCHEMA)
