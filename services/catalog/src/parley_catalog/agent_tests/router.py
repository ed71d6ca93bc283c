"""HTTP: the adversarial-tests routes of the HappyRobot SDK (`/nodes/{node_id}/adversarial-tests`,
`/adversarial-tests/…`) and Parley's own under the agent and its owner (create, starter suite,
latest result, the publish-gate setting).

Reading needs viewer on the agent's owner, writing and starting runs member, the gate setting
admin (the role that publishes). Everything of an agent another caller cannot see is 404.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated
from uuid import UUID

from fastapi import Path, Query, status

from parley_catalog.agent_tests import runs, schemas, service
from parley_catalog.agent_tests.models import AgentTest, AgentTestRun, AgentTestSettings
from parley_catalog.agents import service as agents
from parley_catalog.agents.deps import ViewedAgent
from parley_catalog.agents.models import Agent
from parley_catalog.cursor import CursorPage
from parley_catalog.deps import AgentsReader, AgentsWriter, Ctx, Db
from parley_catalog.loaded import Loader, loaded, loader
from parley_catalog.owner import ADMINISTER, ORG, READ, USER, Owner, owner_routes
from parley_catalog.params import AgentID
from parley_catalog.routing import contract_router, deleting
from parley_common.agent_test_contract import RunStatus
from parley_common.auth_contract import MemberRole

router = contract_router("adversarial-tests")

TestID = Annotated[UUID, Path(alias="id", description="Adversarial test ID.")]
RunID = Annotated[UUID, Path(alias="run_id", description="Test run ID.")]
NodeID = Annotated[
    str,
    Path(
        alias="node_id",
        min_length=1,
        max_length=200,
        description="A node of the agent's flow: a blueprint node id, or an Octavus trigger name.",
    ),
]
AgentQuery = Annotated[UUID, Query(alias="agent_id", description="The agent the tests belong to.")]

TestOf = tuple[AgentTest, Agent]  # the test and its agent
ViewedTest = Annotated[TestOf, loaded(service.load_test, TestID, AgentsReader, MemberRole.VIEWER)]
_locked_test = partial(service.load_test, lock=True)
DeletedTest = Annotated[TestOf, loaded(_locked_test, TestID, AgentsWriter, MemberRole.MEMBER)]
# Routes with a body load their row once it is read (see parley_catalog.loaded).
LoadChangedTest = Annotated[Loader[TestOf], loader(_locked_test, TestID, AgentsWriter, MemberRole.MEMBER)]
LoadTestedAgent = Annotated[Loader[Agent], loader(agents.load_for, AgentID, AgentsWriter, MemberRole.MEMBER)]
ViewedRun = Annotated[AgentTestRun, loaded(runs.load_run, RunID, AgentsReader, MemberRole.VIEWER)]
# `?agent_id=`, read by a viewer; `/agents/{agentID}/…` changed by a member (one change at a time).
QueriedAgent = Annotated[Agent, loaded(agents.load_for, AgentQuery, AgentsReader, MemberRole.VIEWER)]
ChangedAgent = Annotated[
    Agent, loaded(partial(agents.load_for, lock=True), AgentID, AgentsWriter, MemberRole.MEMBER)
]


# ------------------------------------------------------------------------------ SDK routes


@router.get(
    "/nodes/{node_id}/adversarial-tests",
    summary="List an agent's adversarial tests that target one node (requires viewer)",
)
async def list_node_adversarial_tests(
    node_id: NodeID, agent_id: AgentQuery, ctx: Ctx, db: Db, principal: AgentsReader
) -> schemas.AdversarialTestList:
    agent = await agents.load_for(ctx, db, principal, agent_id, MemberRole.VIEWER)
    tests = await service.list_tests(db, agent.id, node_id=node_id)
    return schemas.AdversarialTestList(items=[service.to_schema(t) for t in tests])


@router.get(
    "/adversarial-tests/effective-scope",
    summary="Which tests apply to the agent's current version, and its latest result (requires viewer)",
)
async def get_adversarial_test_effective_scope(
    agent: QueriedAgent, db: Db
) -> schemas.AdversarialTestEffectiveScope:
    shape, applies, excluded = await service.effective_scope(db, agent)
    return schemas.AdversarialTestEffectiveScope(
        agent_id=agent.id,
        agent_version=agent.version,
        definition="protocol" if shape.definition == "protocol" else "blueprint",
        nodes=[schemas.ScopeNode(id=n.id, type=n.type) for n in shape.nodes],
        tools=shape.tools,
        tests=[t.id for t in applies],
        excluded=[schemas.ExcludedTest(test_id=t.id, reason=reason) for t, reason in excluded],
        gate_publish=await service.gate_enabled(db, agent),
        result=await service.latest_result(db, agent, applies),
    )


@router.post(
    "/adversarial-tests/run",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run an agent's tests, or some of them (requires member)",
    description="Queues one run per test (a batch) and answers at once; poll "
    "`GET /adversarial-tests/runs?agent_id=…&batch_id=…` for progress and verdicts.",
)
async def run_adversarial_tests(
    body: schemas.RunAdversarialTestBody, ctx: Ctx, db: Db, principal: AgentsWriter
) -> schemas.RunAdversarialTestResponse:
    agent = await agents.load_for(ctx, db, principal, body.agent_id, MemberRole.MEMBER)
    started = await runs.start_runs(ctx, db, principal, agent, body)
    await db.commit()
    return schemas.RunAdversarialTestResponse(
        batch_id=started[0].batch_id, runs=[runs.run_schema(r, []) for r in started]
    )


@router.get(
    "/adversarial-tests/runs",
    summary="List an agent's test runs with their remarks, newest first (requires viewer)",
    description="Cursor pagination: pass `next_cursor` back as `after`.",
)
async def list_adversarial_test_runs(
    agent_id: AgentQuery,
    ctx: Ctx,
    db: Db,
    principal: AgentsReader,
    page: CursorPage,
    test_id: Annotated[UUID | None, Query()] = None,
    batch_id: Annotated[UUID | None, Query()] = None,
    status: Annotated[RunStatus | None, Query()] = None,
) -> schemas.GetAdversarialTestRunsResponse:
    agent = await agents.load_for(ctx, db, principal, agent_id, MemberRole.VIEWER)
    return await runs.list_runs(db, agent.id, test_id=test_id, batch_id=batch_id, status=status, page=page)


@router.get(
    "/adversarial-tests/runs/{run_id}",
    summary="Get one test run with its progress and remarks (requires viewer)",
)
async def get_adversarial_test_run(run: ViewedRun, db: Db) -> schemas.AdversarialTestRun:
    return (await runs.with_remarks(db, [run]))[0]


@router.get(
    "/adversarial-tests/runs/{run_id}/messages",
    summary="The transcript of a test run, in order (requires viewer)",
)
async def list_adversarial_test_run_messages(
    run: ViewedRun, db: Db
) -> schemas.GetAdversarialTestRunMessagesResponse:
    messages = await runs.run_messages(db, run)
    return schemas.GetAdversarialTestRunMessagesResponse(
        run_id=run.id,
        status=RunStatus(run.status),
        items=[schemas.AdversarialTestRunMessage.model_validate(m, from_attributes=True) for m in messages],
    )


@router.get(
    "/adversarial-tests/{id}",
    summary="Get an adversarial test (requires viewer)",
)
async def get_adversarial_test(viewed: ViewedTest) -> schemas.AdversarialTest:
    test, _ = viewed
    return service.to_schema(test)


@router.patch(
    "/adversarial-tests/{id}",
    summary="Edit an adversarial test (requires member)",
    description="Fields given replace the stored ones; `node_id: null` detaches the test from its node. "
    "Runs already started keep the test as it was.",
)
async def patch_adversarial_test(
    load: LoadChangedTest, body: schemas.PatchAdversarialTestBody, db: Db
) -> schemas.AdversarialTest:
    test, _ = await load()
    service.patch_test(test, body)
    await db.commit()
    return service.to_schema(test)


@deleting(
    router,
    "/adversarial-tests/{id}",
    summary="Delete an adversarial test; its past runs stay (requires member)",
)
async def delete_adversarial_test(deleted: DeletedTest, db: Db) -> None:
    test, _ = deleted
    await db.delete(test)
    await db.commit()


# ------------------------------------------------------------------------------ under the agent


@router.get(
    "/agents/{agentID}/adversarial-tests",
    summary="List an agent's adversarial tests (requires viewer)",
)
async def list_agent_adversarial_tests(agent: ViewedAgent, db: Db) -> schemas.AdversarialTestList:
    return schemas.AdversarialTestList(
        items=[service.to_schema(t) for t in await service.list_tests(db, agent.id)]
    )


@router.post(
    "/agents/{agentID}/adversarial-tests",
    status_code=status.HTTP_201_CREATED,
    summary="Create an adversarial test for an agent (requires member)",
)
async def create_agent_adversarial_test(
    load: LoadTestedAgent, body: schemas.CreateAdversarialTestBody, db: Db
) -> schemas.AdversarialTest:
    test = await service.create_test(db, await load(), body)
    await db.commit()
    return service.to_schema(test)


@router.post(
    "/agents/{agentID}/adversarial-tests/generate",
    summary="Generate the agent's starter suite from its prompt, nodes and tools (requires member)",
    description="One test per category that applies (prompt extraction, prompt injection, false "
    "promises, language switch when the agent has a language). Categories the agent already has a "
    "generated test of are kept as they are, so calling it again adds only what is missing.",
)
async def generate_agent_adversarial_tests(
    agent: ChangedAgent, db: Db
) -> schemas.GenerateAdversarialTestsResponse:
    created, existing = await service.generate(db, agent)
    await db.commit()
    return schemas.GenerateAdversarialTestsResponse(
        created=[service.to_schema(t) for t in created], existing=[service.to_schema(t) for t in existing]
    )


@router.get(
    "/agents/{agentID}/adversarial-tests/result",
    summary="The agent's latest test result, as the publish gate sees it (requires viewer)",
)
async def get_agent_adversarial_test_result(agent: ViewedAgent, db: Db) -> schemas.AgentTestResult:
    _, applies, _ = await service.effective_scope(db, agent)
    return await service.latest_result(db, agent, applies)


# ------------------------------------------------------------------------------ the gate setting


def _settings_out(row: AgentTestSettings | None) -> schemas.AgentTestSettingsOut:
    if row is None:
        return schemas.AgentTestSettingsOut(gate_publish=False)
    return schemas.AgentTestSettingsOut(gate_publish=row.gate_publish, updated_at=row.updated_at)


@owner_routes(
    router,
    "GET",
    "/adversarial-tests/settings",
    summaries={
        USER: "Agent-test settings of the authenticated user's own agents",
        ORG: "Agent-test settings of an organization's agents (requires viewer)",
    },
    operation_id="get{}AdversarialTestSettings",
    access=READ,
)
async def get_settings(owner: Owner, db: Db) -> schemas.AgentTestSettingsOut:
    return _settings_out(
        await service.settings_row(db, owner_user_id=owner.user_id, owner_org_id=owner.org_id)
    )


@owner_routes(
    router,
    "PUT",
    "/adversarial-tests/settings",
    summaries={
        USER: "Set whether the user's own agents need passing tests to go live",
        ORG: "Set whether the organization's agents need passing tests to go live (requires admin)",
    },
    operation_id="put{}AdversarialTestSettings",
    access=ADMINISTER,
)
async def put_settings(
    owner: Owner, body: schemas.AgentTestSettingsBody, db: Db
) -> schemas.AgentTestSettingsOut:
    row = await service.save_settings(
        db, body.gate_publish, owner_user_id=owner.user_id, owner_org_id=owner.org_id
    )
    await db.commit()
    return _settings_out(row)
