"""Agent tests: the tests of each agent, their runs (with the transcript and the audit remarks),
and the per-owner setting that gates publishing on them.

No foreign keys, as for conversation history: results arrive from the bus in any order, and a
run outlives the test it ran (it keeps the test's definition as it was in `test`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import CheckConstraint, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from parley_catalog.db import Base
from parley_catalog.timeutil import utcnow


class AgentTest(Base):
    __tablename__ = "agent_tests"
    __table_args__ = (
        CheckConstraint("origin IN ('generated', 'manual')", name="origin"),
        Index("ix_agent_tests_agent", "agent_id", "created_at"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    agent_id: Mapped[UUID]
    # A blueprint node id or an Octavus trigger name; null: the agent as a whole.
    node_id: Mapped[str | None]
    name: Mapped[str]
    category: Mapped[str]
    persona: Mapped[str]
    goal: Mapped[str]
    attack_lines: Mapped[list[Any]] = mapped_column(default=list)
    max_turns: Mapped[int]
    criteria: Mapped[list[Any]]  # [Criterion as JSON]
    tools: Mapped[list[Any]] = mapped_column(default=list)  # tool names the test needs
    enabled: Mapped[bool] = mapped_column(default=True)
    origin: Mapped[str] = mapped_column(default="manual")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentTestRun(Base):
    __tablename__ = "agent_test_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'auditing', 'passed', 'failed', 'error')", name="status"
        ),
        Index("ix_agent_test_runs_agent", "agent_id", text("created_at DESC"), text("id DESC")),
        Index("ix_agent_test_runs_batch", "batch_id"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    # One `POST /adversarial-tests/run` starts a batch: one run per test.
    batch_id: Mapped[UUID]
    agent_id: Mapped[UUID]
    agent_version: Mapped[int]
    test_id: Mapped[UUID]
    test: Mapped[dict[str, Any]]  # the TestDefinition the run executes
    status: Mapped[str] = mapped_column(default="queued")
    # Which attempt the stored results belong to, and how far in it they are (see the consumer).
    attempt: Mapped[int] = mapped_column(default=0)
    step: Mapped[int] = mapped_column(default=-1)
    turns_done: Mapped[int] = mapped_column(default=0)
    conversation_id: Mapped[UUID | None]
    engine: Mapped[str | None]
    model: Mapped[str | None]
    error: Mapped[dict[str, Any] | None]
    started_by_user_id: Mapped[UUID | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentTestMessage(Base):
    __tablename__ = "agent_test_messages"
    __table_args__ = (CheckConstraint("role IN ('attacker', 'agent')", name="role"),)

    run_id: Mapped[UUID] = mapped_column(primary_key=True)
    index: Mapped[int] = mapped_column(primary_key=True)
    attempt: Mapped[int]
    role: Mapped[str]
    content: Mapped[str]
    created_at: Mapped[datetime]


class AgentTestRemark(Base):
    __tablename__ = "agent_test_remarks"
    __table_args__ = (
        CheckConstraint("verdict IN ('pass', 'fail', 'unknown')", name="verdict"),
        UniqueConstraint("run_id", "position"),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    run_id: Mapped[UUID]
    position: Mapped[int]
    criterion_id: Mapped[str]
    criterion: Mapped[str]
    verdict: Mapped[str]
    severity: Mapped[str]
    message_index: Mapped[int | None]
    quote: Mapped[str | None]
    explanation: Mapped[str] = mapped_column(default="")


class AgentTestSettings(Base):
    """Per owner (a user for personal agents, an org for its agents)."""

    __tablename__ = "agent_test_settings"
    __table_args__ = (
        CheckConstraint("(owner_user_id IS NULL) <> (owner_org_id IS NULL)", name="one_owner"),
        Index("ix_agent_test_settings_user", "owner_user_id", unique=True),
        Index("ix_agent_test_settings_org", "owner_org_id", unique=True),
    )

    id: Mapped[UUID] = mapped_column(primary_key=True, default=uuid4)
    owner_user_id: Mapped[UUID | None]
    owner_org_id: Mapped[UUID | None]
    # Going live needs a passing run of the agent's current version.
    gate_publish: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
