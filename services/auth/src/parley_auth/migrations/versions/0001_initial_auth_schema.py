"""initial auth schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 14:40:18.165806
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The helpers below belong to this revision and are frozen with it: they spell the names and
# types auth's tables had in 0001, whatever the models (or a later revision's helpers) say now.
SCHEMA = "auth"


def _uuid(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.Uuid(), nullable=nullable)


def _text(name: str, length: int, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _timestamps() -> tuple[sa.Column[object], sa.Column[object]]:
    return _time("created_at"), _time("updated_at")


def _fk(table: str, column: str, target: str, *, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    """`column` of `table` → `auth.<target>.id`."""
    return sa.ForeignKeyConstraint(
        [column], [f"{SCHEMA}.{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def _table(
    name: str, *items: sa.schema.SchemaItem, key: Sequence[str] = ("id",), unique: str | None = None
) -> None:
    """Create `name` with its columns and foreign keys, primary key `key` and an optional unique column."""
    constraints: list[sa.schema.SchemaItem] = [sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{name}"))]
    if unique is not None:
        constraints.append(sa.UniqueConstraint(unique, name=op.f(f"uq_{name}_{unique}")))
    op.create_table(name, *items, *constraints, schema=SCHEMA)


def _user_secret_table(name: str, *extra: sa.Column[object]) -> None:
    """A user's keyed-hash secret (sessions, password reset tokens), found by its hash or its user."""
    _table(
        name,
        _uuid("id"),
        _uuid("user_id"),
        _text("token_hash", 64),
        _time("created_at"),
        _time("expires_at"),
        *extra,
        _fk(name, "user_id", "users"),
        unique="token_hash",
    )
    _index(name, "user_id")


def _index(table: str, column: str) -> None:
    op.create_index(op.f(f"ix_{SCHEMA}_{table}_{column}"), table, [column], unique=False, schema=SCHEMA)


def _drop_index(table: str, column: str) -> None:
    op.drop_index(op.f(f"ix_{SCHEMA}_{table}_{column}"), table_name=table, schema=SCHEMA)


# Unique among the rows not soft-deleted.
LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    _table(
        "outbox_mail",
        _uuid("id"),
        _text("to_addr", 320),
        _text("subject", 500),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        _time("sent_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    _index("outbox_mail", "next_attempt_at")
    _table(
        "users",
        _uuid("id"),
        _text("email", 320),
        _text("name", 200),
        _text("avatar_url", 2048, nullable=True),
        _text("password_hash", 255),
        _time("deleted_at", nullable=True),
        *_timestamps(),
    )
    op.create_index(
        "uq_users_email_live",
        "users",
        [sa.literal_column("lower(email)")],
        unique=True,
        schema=SCHEMA,
        postgresql_where=LIVE,
    )
    _table(
        "orgs",
        _uuid("id"),
        _uuid("created_by", nullable=True),
        _text("name", 200),
        _text("description", 2000, nullable=True),
        _text("avatar_url", 2048, nullable=True),
        _text("slug", 64),
        _text("tier", 32),
        _time("deleted_at", nullable=True),
        *_timestamps(),
        _fk("orgs", "created_by", "users", ondelete="SET NULL"),
    )
    op.create_index("uq_orgs_slug_live", "orgs", ["slug"], unique=True, schema=SCHEMA, postgresql_where=LIVE)
    _user_secret_table("password_reset_tokens", _time("used_at", nullable=True))
    _user_secret_table(
        "sessions",
        _time("revoked_at", nullable=True),
        _text("user_agent", 512, nullable=True),
        _text("ip", 64, nullable=True),
    )
    _table(
        "api_keys",
        _uuid("id"),
        _uuid("owner_user_id", nullable=True),
        _uuid("owner_org_id", nullable=True),
        _uuid("created_by_user_id"),
        _text("name", 200),
        _text("prefix", 32),
        _text("key_hash", 64),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        _time("created_at"),
        _time("expires_at", nullable=True),
        _time("last_used_at", nullable=True),
        _time("revoked_at", nullable=True),
        _fk("api_keys", "created_by_user_id", "users"),
        _fk("api_keys", "owner_org_id", "orgs"),
        _fk("api_keys", "owner_user_id", "users"),
        unique="key_hash",
    )
    _index("api_keys", "owner_org_id")
    _index("api_keys", "owner_user_id")
    _table(
        "memberships",
        _uuid("org_id"),
        _uuid("user_id"),
        _text("role", 16),
        *_timestamps(),
        _fk("memberships", "org_id", "orgs"),
        _fk("memberships", "user_id", "users"),
        key=("org_id", "user_id"),
    )
    _index("memberships", "user_id")
    _table(
        "client_tokens",
        _uuid("id"),
        _uuid("api_key_id"),
        _uuid("user_id"),
        _uuid("org_id", nullable=True),
        _text("agent_id", 200),
        _text("env", 16),
        _text("token_type", 8),
        sa.Column("data", sa.JSON(), nullable=True),
        _time("created_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        _fk("client_tokens", "api_key_id", "api_keys"),
        _fk("client_tokens", "user_id", "users"),
    )
    _index("client_tokens", "api_key_id")


def downgrade() -> None:
    _drop_index("client_tokens", "api_key_id")
    op.drop_table("client_tokens", schema=SCHEMA)
    _drop_index("memberships", "user_id")
    op.drop_table("memberships", schema=SCHEMA)
    _drop_index("api_keys", "owner_user_id")
    _drop_index("api_keys", "owner_org_id")
    op.drop_table("api_keys", schema=SCHEMA)
    _drop_index("sessions", "user_id")
    op.drop_table("sessions", schema=SCHEMA)
    _drop_index("password_reset_tokens", "user_id")
    op.drop_table("password_reset_tokens", schema=SCHEMA)
    op.drop_index("uq_orgs_slug_live", table_name="orgs", schema=SCHEMA, postgresql_where=LIVE)
    op.drop_table("orgs", schema=SCHEMA)
    op.drop_index("uq_users_email_live", table_name="users", schema=SCHEMA, postgresql_where=LIVE)
    op.drop_table("users", schema=SCHEMA)
    _drop_index("outbox_mail", "next_attempt_at")
    op.drop_table("outbox_mail", schema=SCHEMA)
