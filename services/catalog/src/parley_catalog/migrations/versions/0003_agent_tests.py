"""agent tests: tests, runs, messages, remarks, settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:10:48.161959
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from parley_catalog.migration_columns import (
    boolean,
    check,
    create_index,
    create_table,
    drop_table,
    integer,
    jsonb,
    one_owner,
    owned_by,
    string,
    timestamp,
    uuid,
)

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_table(
        "agent_test_messages",
        uuid("run_id"),
        integer("index"),
        integer("attempt"),
        string("role"),
        string("content"),
        timestamp("created_at"),
        check("agent_test_messages", "role", "role IN ('attacker', 'agent')"),
        key=["run_id", "index"],
    )
    create_table(
        "agent_test_remarks",
        uuid("id"),
        uuid("run_id"),
        integer("position"),
        string("criterion_id"),
        string("criterion"),
        string("verdict"),
        string("severity"),
        integer("message_index", null=True),
        string("quote", null=True),
        string("explanation"),
        check("agent_test_remarks", "verdict", "verdict IN ('pass', 'fail', 'unknown')"),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_agent_test_remarks_run_id")),
    )
    create_table(
        "agent_test_runs",
        uuid("id"),
        uuid("batch_id"),
        uuid("agent_id"),
        integer("agent_version"),
        uuid("test_id"),
        jsonb("test"),
        string("status"),
        integer("attempt"),
        integer("step"),
        integer("turns_done"),
        uuid("conversation_id", null=True),
        string("engine", null=True),
        string("model", null=True),
        jsonb("error", null=True),
        uuid("started_by_user_id", null=True),
        timestamp("created_at"),
        timestamp("started_at", null=True),
        timestamp("finished_at", null=True),
        timestamp("updated_at"),
        check(
            "agent_test_runs",
            "status",
            "status IN ('queued', 'running', 'auditing', 'passed', 'failed', 'error')",
        ),
    )
    create_index(
        "ix_agent_test_runs_agent",
        "agent_test_runs",
        ["agent_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
    )
    create_index("ix_agent_test_runs_batch", "agent_test_runs", ["batch_id"])
    create_table(
        "agent_test_settings",
        *owned_by(),
        boolean("gate_publish"),
        timestamp("updated_at"),
        one_owner("agent_test_settings"),
    )
    create_index("ix_agent_test_settings_org", "agent_test_settings", ["owner_org_id"], unique=True)
    create_index("ix_agent_test_settings_user", "agent_test_settings", ["owner_user_id"], unique=True)
    create_table(
        "agent_tests",
        uuid("id"),
        uuid("agent_id"),
        string("node_id", null=True),
        string("name"),
        string("category"),
        string("persona"),
        string("goal"),
        jsonb("attack_lines"),
        integer("max_turns"),
        jsonb("criteria"),
        jsonb("tools"),
        boolean("enabled"),
        string("origin"),
        timestamp("created_at"),
        timestamp("updated_at"),
        check("agent_tests", "origin", "origin IN ('generated', 'manual')"),
    )
    create_index("ix_agent_tests_agent", "agent_tests", ["agent_id", "created_at"])


def downgrade() -> None:
    drop_table("agent_tests", "ix_agent_tests_agent")
    drop_table("agent_test_settings", "ix_agent_test_settings_user", "ix_agent_test_settings_org")
    drop_table("agent_test_runs", "ix_agent_test_runs_batch", "ix_agent_test_runs_agent")
    drop_table("agent_test_remarks")
    drop_table("agent_test_messages")
