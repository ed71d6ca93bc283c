"""Agent tests: records, starter suites, the effective scope and latest result, and the publish gate.

Runs (starting them, listing and reading them) are in runs.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.access import not_found, owning_agent
from parley_catalog.agent_tests import schemas
from parley_catalog.agent_tests.models import (
    AgentTest,
    AgentTestRun,
    AgentTestSettings,
)
from parley_catalog.agent_tests.scope import AgentShape, Exclusion, exclusion, shape_of
from parley_catalog.agent_tests.starter import Starter, starter_suite
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.convert import from_row
from parley_catalog.timeutil import utcnow
from parley_common.agent_test_contract import (
    Criterion,
    RunStatus,
    TestCategory,
    TestDefinition,
)
from parley_common.auth_contract import MemberRole, Principal
from parley_common.errors import Codes, ParleyError

log = structlog.get_logger(__name__)


# ------------------------------------------------------------------------------ tests


def to_schema(test: AgentTest) -> schemas.AdversarialTest:
    return from_row(
        schemas.AdversarialTest, test, origin="generated" if test.origin == "generated" else "manual"
    )


async def list_tests(db: AsyncSession, agent_id: UUID, node_id: str | None = None) -> list[AgentTest]:
    query = select(AgentTest).where(AgentTest.agent_id == agent_id)
    if node_id is not None:
        query = query.where(AgentTest.node_id == node_id)
    return list((await db.scalars(query.order_by(AgentTest.created_at, AgentTest.id))).all())


async def load_test(
    ctx: CatalogContext,
    db: AsyncSession,
    principal: Principal,
    test_id: UUID,
    min_role: MemberRole,
    *,
    lock: bool = False,
) -> tuple[AgentTest, Agent]:
    """The test and its agent, if the caller holds `min_role` on the agent; else 404 / 403."""
    test = await db.get(AgentTest, test_id)
    agent = await owning_agent(
        ctx, db, principal, test.agent_id if test else None, min_role, "adversarial test"
    )
    assert test is not None  # owning_agent found its agent
    if lock:
        locked = await db.get(AgentTest, test_id, with_for_update=True, populate_existing=True)
        if locked is None:
            raise not_found("adversarial test")
        test = locked
    return test, agent


def _dump_criteria(criteria: Sequence[Criterion]) -> list[Any]:
    ids = [c.id for c in criteria]
    if len(set(ids)) != len(ids):
        raise ParleyError(Codes.VALIDATION_FAILED, "criteria: ids must be unique within a test.")
    return [c.model_dump(mode="json") for c in criteria]


def _new_test(
    agent: Agent,
    source: schemas.CreateAdversarialTestBody | Starter,
    *,
    tools: list[str],
    enabled: bool,
    origin: str,
    now: datetime,
) -> AgentTest:
    """A test row of `agent` from a request or a starter template."""
    return AgentTest(
        agent_id=agent.id,
        node_id=source.node_id,
        name=source.name,
        category=source.category.value,
        persona=source.persona,
        goal=source.goal,
        attack_lines=list(source.attack_lines),
        max_turns=source.max_turns,
        criteria=_dump_criteria(source.criteria),
        tools=tools,
        enabled=enabled,
        origin=origin,
        created_at=now,
        updated_at=now,
    )


# Bounds on what one agent may hold: every test in scope runs in a batch, each run is a
# conversation plus LLM calls.
MAX_TESTS_PER_AGENT = 100


async def create_test(db: AsyncSession, agent: Agent, body: schemas.CreateAdversarialTestBody) -> AgentTest:
    count = await db.scalar(select(func.count()).select_from(AgentTest).where(AgentTest.agent_id == agent.id))
    if (count or 0) >= MAX_TESTS_PER_AGENT:
        raise ParleyError(Codes.CONFLICT, f"An agent has at most {MAX_TESTS_PER_AGENT} adversarial tests.")
    test = _new_test(
        agent, body, tools=sorted(set(body.tools)), enabled=body.enabled, origin="manual", now=utcnow()
    )
    db.add(test)
    return test


def patch_test(test: AgentTest, body: schemas.PatchAdversarialTestBody) -> None:
    given = body.model_fields_set
    if "node_id" in given:
        test.node_id = body.node_id
    for name in ("name", "persona", "goal", "max_turns", "enabled"):
        value = getattr(body, name)
        if name in given and value is not None:
            setattr(test, name, value)
    if body.category is not None:
        test.category = body.category.value
    if body.attack_lines is not None:
        test.attack_lines = list(body.attack_lines)
    if body.criteria is not None:
        test.criteria = _dump_criteria(body.criteria)
    if body.tools is not None:
        test.tools = sorted(set(body.tools))
    test.updated_at = utcnow()


async def generate(db: AsyncSession, agent: Agent) -> tuple[list[AgentTest], list[AgentTest]]:
    """The agent's starter suite: (made now, already there). One generated test per category;
    a category the agent already has a generated test of is left as the team edited it."""
    shape = await shape_of(db, agent)
    existing = [t for t in await list_tests(db, agent.id) if t.origin == "generated"]
    have = {t.category for t in existing}
    created = []
    now = utcnow()
    for starter in starter_suite(shape):
        if starter.category.value in have:
            continue
        test = _new_test(agent, starter, tools=[], enabled=True, origin="generated", now=now)
        db.add(test)
        created.append(test)
    await db.flush()
    return created, existing


def definition(test: AgentTest) -> TestDefinition:
    return TestDefinition(
        test_id=test.id,
        name=test.name,
        category=TestCategory(test.category),
        node_id=test.node_id,
        persona=test.persona,
        goal=test.goal,
        attack_lines=list(test.attack_lines),
        max_turns=test.max_turns,
        criteria=[Criterion.model_validate(c) for c in test.criteria],
    )


# ------------------------------------------------------------------------------ scope and results


async def effective_scope(
    db: AsyncSession, agent: Agent
) -> tuple[AgentShape, list[AgentTest], list[tuple[AgentTest, Exclusion]]]:
    shape = await shape_of(db, agent)
    applies, excluded = [], []
    for test in await list_tests(db, agent.id):
        reason = exclusion(test, shape)
        if reason is None:
            applies.append(test)
        else:
            excluded.append((test, reason))
    return shape, applies, excluded


async def latest_result(db: AsyncSession, agent: Agent, in_scope: list[AgentTest]) -> schemas.AgentTestResult:
    """The agent's latest batch of runs, summed up; `stale` when it is not about this version or
    did not run every test in scope."""
    latest = await db.scalar(
        select(AgentTestRun)
        .where(AgentTestRun.agent_id == agent.id)
        .order_by(AgentTestRun.created_at.desc(), AgentTestRun.id.desc())
        .limit(1)
    )
    result = schemas.AgentTestResult(agent_id=agent.id, agent_version=agent.version, status="not_run")
    if latest is None:
        return result
    batch = select(AgentTestRun).where(AgentTestRun.batch_id == latest.batch_id)
    runs = list((await db.scalars(batch)).all())
    statuses = [RunStatus(r.status) for r in runs]
    result.batch_id = latest.batch_id
    result.batch_version = latest.agent_version
    result.total = len(runs)
    result.passed = statuses.count(RunStatus.PASSED)
    result.failed = statuses.count(RunStatus.FAILED)
    result.errored = statuses.count(RunStatus.ERROR)
    result.running = sum(1 for s in statuses if not s.finished)
    finished = [r.finished_at for r in runs if r.finished_at is not None]
    result.finished_at = max(finished) if finished and not result.running else None
    covered = {r.test_id for r in runs}
    if result.running:
        result.status = "running"
    elif result.failed or result.errored:
        result.status = "failed"
    elif latest.agent_version != agent.version or not {t.id for t in in_scope} <= covered:
        result.status = "stale"
    else:
        result.status = "passed"
    return result


# ------------------------------------------------------------------------------ settings and gate


async def settings_row(
    db: AsyncSession, *, owner_user_id: UUID | None = None, owner_org_id: UUID | None = None
) -> AgentTestSettings | None:
    if owner_user_id is not None:
        owner = AgentTestSettings.owner_user_id == owner_user_id
    else:
        owner = AgentTestSettings.owner_org_id == owner_org_id
    return await db.scalar(select(AgentTestSettings).where(owner))


async def save_settings(
    db: AsyncSession,
    gate_publish: bool,
    *,
    owner_user_id: UUID | None = None,
    owner_org_id: UUID | None = None,
) -> AgentTestSettings:
    """Upsert (two admins saving at once both succeed, the last write stays)."""
    column = "owner_user_id" if owner_user_id is not None else "owner_org_id"
    now = utcnow()
    await db.execute(
        insert(AgentTestSettings)
        .values(
            id=uuid.uuid4(),
            owner_user_id=owner_user_id,
            owner_org_id=owner_org_id,
            gate_publish=gate_publish,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=[column], set_={"gate_publish": gate_publish, "updated_at": now}
        )
    )
    row = await settings_row(db, owner_user_id=owner_user_id, owner_org_id=owner_org_id)
    assert row is not None
    return row


async def gate_enabled(db: AsyncSession, agent: Agent) -> bool:
    row = await settings_row(db, owner_user_id=agent.owner_user_id, owner_org_id=agent.owner_org_id)
    return bool(row is not None and row.gate_publish)


async def check_publish_gate(db: AsyncSession, agent: Agent) -> None:
    """Called before an agent goes live: with the owner's gate on, its latest batch must have
    passed on this very version and covered every test in scope (409 otherwise)."""
    if not await gate_enabled(db, agent):
        return
    _, applies, _ = await effective_scope(db, agent)
    result = await latest_result(db, agent, applies)
    version = {"version": agent.version}
    if result.status == "passed":
        return
    if result.status == "failed":
        failed = result.failed + result.errored
        raise ParleyError(
            Codes.AGENT_TESTS_FAILED,
            params={"failed": failed, "total": result.total, "batch_id": str(result.batch_id)},
        )
    detail = {
        "not_run": "the agent has no test run yet",
        "running": "its latest test run is still going",
        "stale": "its latest test run was made for another version, or not on every test in scope",
    }[result.status]
    raise ParleyError(Codes.AGENT_TESTS_NOT_RUN, params={**version, "detail": detail})
