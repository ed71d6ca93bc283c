"""client tokens minted with a browser session (ServiceAi POST /api/realtime-token)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("client_tokens", "api_key_id", existing_type=sa.Uuid(), nullable=True, schema="auth")
    op.add_column("client_tokens", sa.Column("session_id", sa.Uuid(), nullable=True), schema="auth")
    op.create_foreign_key(
        op.f("fk_client_tokens_session_id_sessions"),
        "client_tokens",
        "sessions",
        ["session_id"],
        ["id"],
        source_schema="auth",
        referent_schema="auth",
        ondelete="CASCADE",
    )
    op.create_index(
        op.f("ix_auth_client_tokens_session_id"), "client_tokens", ["session_id"], unique=False, schema="auth"
    )
    op.create_check_constraint(
        "ck_client_tokens_one_root",
        "client_tokens",
        "(api_key_id IS NULL) <> (session_id IS NULL)",
        schema="auth",
    )


def downgrade() -> None:
    op.execute("DELETE FROM auth.client_tokens WHERE api_key_id IS NULL")
    op.drop_constraint("ck_client_tokens_one_root", "client_tokens", schema="auth", type_="check")
    op.drop_index(op.f("ix_auth_client_tokens_session_id"), table_name="client_tokens", schema="auth")
    op.drop_constraint(
        op.f("fk_client_tokens_session_id_sessions"), "client_tokens", schema="auth", type_="foreignkey"
    )
    op.drop_column("client_tokens", "session_id", schema="auth")
    op.alter_column("client_tokens", "api_key_id", existing_type=sa.Uuid(), nullable=False, schema="auth")
