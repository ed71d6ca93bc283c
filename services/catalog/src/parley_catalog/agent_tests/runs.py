"""Agent test runs: starting them (jobs on the `AGENT_TESTS` stream), listing and reading them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from uuid import UUID

import structlog
from pydantic import AwareDatetime, BaseModel
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog import cursor
from parley_catalog.access import not_found, owning_agent
from parley_catalog.agent_tests import schemas
from parley_catalog.agent_tests.models import (
    AgentTestMessage,
    AgentTestRemark,
    AgentTestRun,
)
from parley_catalog.agent_tests.service import definition, effective_scope
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.convert import from_row
from parley_catalog.timeutil import utcnow
from parley_common import subjects
from parley_common.agent_test_contract import (
    AgentTestJob,
    RunStatus,
    TestCategory,
    TestDefinition,
)
from parley_common.auth_contract import MemberRole, Principal
from parley_common.errors import Codes, ErrorEnvelope, ParleyError
from parley_common.session_contract import trace_headers

log = structlog.get_logger(__name__)

MAX_UNFINISHED_RUNS_PER_AGENT = 100


class RunKey(BaseModel):
    """Sort key of the runs list (newest first), for its cursor."""

    created_at: AwareDatetime
    id: UUID


def run_schema(run: AgentTestRun, remarks: Sequence[AgentTestRemark]) -> schemas.AdversarialTestRun:
    test = run.test or {}  # the test as it was when the run started (`TestDefinition`)
    return from_row(
        schemas.AdversarialTestRun,
        run,
        test_name=str(test.get("name", "")),
        category=TestCategory(test.get("category", TestCategory.CUSTOM.value)),
        node_id=test.get("node_id"),
        max_turns=int(test.get("max_turns", 0)),
        remarks=[
            schemas.AuditRemark.model_validate(r, from_attributes=True)
            for r in sorted(remarks, key=lambda r: r.position)
        ],
        error=ErrorEnvelope.model_validate(run.error) if run.error else None,
    )


async def with_remarks(db: AsyncSession, runs: Sequence[AgentTestRun]) -> list[schemas.AdversarialTestRun]:
    ids = [r.id for r in runs]
    remarks: dict[UUID, list[AgentTestRemark]] = {i: [] for i in ids}
    if ids:
        for remark in await db.scalars(select(AgentTestRemark).where(AgentTestRemark.run_id.in_(ids))):
            remarks[remark.run_id].append(remark)
    return [run_schema(r, remarks[r.id]) for r in runs]


async def start_runs(
    ctx: CatalogContext,
    db: AsyncSession,
    principal: Principal,
    agent: Agent,
    body: schemas.RunAdversarialTestBody,
) -> list[AgentTestRun]:
    """One run per test, queued on the bus before the rows are committed (a job whose rows never
    commit has its results dropped by the consumer; rows whose jobs were never queued would wait
    forever)."""
    if agent.protocol is not None:
        raise ParleyError(Codes.AGENT_TEST_UNSUPPORTED_AGENT, params={"agent_id": str(agent.id)})
    _, applies, excluded = await effective_scope(db, agent)
    if body.test_ids is not None:
        wanted = list(dict.fromkeys(body.test_ids))
        known = {t.id: t for t in applies} | {t.id: t for t, _ in excluded}
        missing = [i for i in wanted if i not in known]
        if missing:
            raise not_found("adversarial test")
        tests = [known[i] for i in wanted]
    else:
        tests = applies
    if not tests:
        raise ParleyError(Codes.AGENT_TEST_NO_TESTS)
    unfinished = await db.scalar(
        select(func.count())
        .select_from(AgentTestRun)
        .where(
            AgentTestRun.agent_id == agent.id,
            AgentTestRun.status.in_([s.value for s in RunStatus if not s.finished]),
        )
    )
    if (unfinished or 0) + len(tests) > MAX_UNFINISHED_RUNS_PER_AGENT:
        raise ParleyError(
            Codes.CONFLICT,
            f"The agent has {unfinished} test runs still going; at most {MAX_UNFINISHED_RUNS_PER_AGENT} "
            "may wait at once. Retry when some have finished.",
        )
    batch_id, now = uuid.uuid4(), utcnow()
    runs = []
    for test in tests:
        run = AgentTestRun(
            id=uuid.uuid4(),
            batch_id=batch_id,
            agent_id=agent.id,
            agent_version=agent.version,
            test_id=test.id,
            test=definition(test).model_dump(mode="json"),
            status=RunStatus.QUEUED.value,
            attempt=0,
            step=-1,
            turns_done=0,
            model=body.model,
            started_by_user_id=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        db.add(run)
        runs.append(run)
    await db.flush()
    js = ctx.broker.connection.jetstream()
    for run in runs:
        job = AgentTestJob(
            run_id=run.id,
            batch_id=batch_id,
            agent_id=agent.id,
            agent_version=agent.version,
            principal=principal,
            test=TestDefinition.model_validate(run.test),
            model=body.model,
            requested_at=now,
        )
        try:
            await js.publish(
                subjects.AGENT_TEST_RUN,
                job.model_dump_json().encode(),
                headers=trace_headers({"Nats-Msg-Id": str(run.id)}),
            )
        except Exception as exc:
            log.warning("catalog.agent_test_queue_failed", run_id=str(run.id), error=str(exc))
            raise ParleyError(Codes.SERVICE_UNAVAILABLE, "The test-run queue is unavailable; retry.") from exc
    return runs


async def list_runs(
    db: AsyncSession,
    agent_id: UUID,
    *,
    test_id: UUID | None,
    batch_id: UUID | None,
    status: RunStatus | None,
    page: cursor.CursorQuery,
) -> schemas.GetAdversarialTestRunsResponse:
    where: list[ColumnElement[bool]] = [AgentTestRun.agent_id == agent_id]
    if test_id is not None:
        where.append(AgentTestRun.test_id == test_id)
    if batch_id is not None:
        where.append(AgentTestRun.batch_id == batch_id)
    if status is not None:
        where.append(AgentTestRun.status == status.value)
    if page.after is not None:
        key = cursor.decode(page.after, RunKey)
        where.append(
            or_(
                AgentTestRun.created_at < key.created_at,
                and_(AgentTestRun.created_at == key.created_at, AgentTestRun.id < key.id),
            )
        )
    query = (
        select(AgentTestRun).where(*where).order_by(AgentTestRun.created_at.desc(), AgentTestRun.id.desc())
    )
    rows, next_cursor = await cursor.page(
        db, query, page.limit, lambda r: RunKey(created_at=r.created_at, id=r.id)
    )
    return schemas.GetAdversarialTestRunsResponse(items=await with_remarks(db, rows), next_cursor=next_cursor)


async def load_run(
    ctx: CatalogContext, db: AsyncSession, principal: Principal, run_id: UUID, min_role: MemberRole
) -> AgentTestRun:
    run = await db.get(AgentTestRun, run_id)
    await owning_agent(ctx, db, principal, run.agent_id if run else None, min_role, "test run")
    assert run is not None  # owning_agent found its agent
    return run


async def run_messages(db: AsyncSession, run: AgentTestRun) -> list[AgentTestMessage]:
    query = (
        select(AgentTestMessage)
        .where(AgentTestMessage.run_id == run.id, AgentTestMessage.attempt == run.attempt)
        .order_by(AgentTestMessage.index)
    )
    return list((await db.scalars(query)).all())
