"""The vocabulary of the catalog's Alembic migrations: column types, the column sets most tables
share (id, owners, timestamps) and tables and indexes created in the `catalog` schema.

What the migrations build must never change once released, so neither may this module: a change
here changes what old migrations build, and services/catalog/tests/test_migrations.py (the schema
PostgreSQL describes, recorded in catalog_schema.txt) fails. Add a helper rather than change one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

SCHEMA = "catalog"


def uuid(name: str, *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Uuid(), nullable=null)


def string(name: str, *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.String(), nullable=null)


def integer(name: str, *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), nullable=null)


def boolean(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Boolean(), nullable=False)


def jsonb(name: str, *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, postgresql.JSONB(astext_type=sa.Text()), nullable=null)


def timestamp(name: str, *, null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=null)


def search(expression: str) -> sa.Column[Any]:
    """The stored full-text `search` column computed from `expression`."""
    return sa.Column("search", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=False)


def owned_by(first: str = "owner_user_id") -> list[sa.Column[Any]]:
    """`id` and the two owner columns of a row owned by one of two kinds (`first` or an org)."""
    return [uuid("id"), uuid(first, null=True), uuid("owner_org_id", null=True)]


def one_owner(table: str, first: str = "owner_user_id") -> sa.CheckConstraint:
    """Exactly one of the two owner columns `owned_by(first)` made is set."""
    return check(table, "one_owner", f"({first} IS NULL) <> (owner_org_id IS NULL)")


def lifetime() -> list[sa.Column[Any]]:
    """`created_at`, `updated_at` and `deleted_at` (soft delete) of a row."""
    return [timestamp("created_at"), timestamp("updated_at"), timestamp("deleted_at", null=True)]


def check(table: str, name: str, condition: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}"))


def create_table(name: str, *items: Any, key: Sequence[str] = ("id",)) -> None:
    """`op.create_table` in the catalog schema, with its primary key on `key`."""
    op.create_table(name, *items, sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{name}")), schema=SCHEMA)


def create_index(
    name: str, table: str, columns: Sequence[Any], *, unique: bool = False, **dialect: Any
) -> None:
    op.create_index(name, table, list(columns), unique=unique, schema=SCHEMA, **dialect)


def live_owner_indexes(table: str) -> None:
    """`ix_<table>_owner_org` and `_owner_user`: an owner's live rows, by creation time."""
    for owner in ("org", "user"):
        create_index(
            f"ix_{table}_owner_{owner}",
            table,
            [f"owner_{owner}_id", "created_at"],
            postgresql_where=sa.text("deleted_at IS NULL"),
        )


def unique_per_owner(table: str, column: str, owners: Sequence[str], name: str, also: str = "") -> None:
    """`column` unique among the live rows of each owner: one partial unique index per owner kind
    (`name` formatted with it), over the rows where `also` holds too."""
    for owner in owners:
        create_index(
            name.format(owner),
            table,
            [f"owner_{owner}_id", column],
            unique=True,
            postgresql_where=sa.text(f"deleted_at IS NULL AND {also}owner_{owner}_id IS NOT NULL"),
        )


def drop_index(name: str, table: str) -> None:
    op.drop_index(name, table_name=table, schema=SCHEMA)


def drop_table(name: str, *indexes: str) -> None:
    """Drop `indexes` of table `name`, then the table."""
    for index in indexes:
        drop_index(index, name)
    op.drop_table(name, schema=SCHEMA)
