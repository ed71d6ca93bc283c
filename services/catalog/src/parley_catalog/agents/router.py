"""HTTP: /users/me/agents, /orgs/{orgSlug}/agents, /agents/{agentID}[/status|/lint]."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Body

from parley_catalog.agent_tests import service as agent_tests
from parley_catalog.agents import events, schemas, service
from parley_catalog.agents.deps import ViewedAgent
from parley_catalog.agents.models import Agent
from parley_catalog.deps import AgentsReader, AgentsWriter, Ctx, Db
from parley_catalog.loaded import Loader, loaded, loader
from parley_catalog.owner import Owner, owned_create_routes, owned_list_routes
from parley_catalog.params import AgentID
from parley_catalog.routing import contract_router, deleting
from parley_catalog.templates import service as templates
from parley_common.auth_contract import MemberRole
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import AgentEventKind, AgentStatus

router = contract_router("agents")
_locked = partial(service.load_for, lock=True)
DeletedAgent = Annotated[Agent, loaded(_locked, AgentID, AgentsWriter, MemberRole.ADMIN)]
# Routes with a body load the agent once it is read (see parley_catalog.loaded).
LoadViewed = Annotated[Loader[Agent], loader(service.load_for, AgentID, AgentsReader, MemberRole.VIEWER)]
LoadChanged = Annotated[Loader[Agent], loader(_locked, AgentID, AgentsWriter, MemberRole.MEMBER)]
LoadPublished = Annotated[Loader[Agent], loader(_locked, AgentID, AgentsWriter, MemberRole.ADMIN)]


owned_list_routes(router, "/agents", Agent, schemas.AgentPage, service.to_schema)


@owned_create_routes(router, "/agents", "an agent")
async def create_agent(owner: Owner, body: schemas.CreateAgentRequest, ctx: Ctx, db: Db) -> schemas.Agent:
    """Create an agent (from a template the caller may view, when one is named) and announce it."""
    template = None
    if body.template_id is not None:
        template = await templates.load_for(ctx, db, owner.principal, body.template_id, MemberRole.VIEWER)
    agent = await service.create_agent(ctx, db, body, owner, template=template)
    await events.commit(db, ctx.broker, agent, AgentEventKind.CREATED)
    return service.to_schema(agent)


@router.get(
    "/agents/{agentID}",
    summary="Get an agent by ID (requires viewer)",
)
async def get_agent(agent: ViewedAgent) -> schemas.Agent:
    return service.to_schema(agent)


@router.patch(
    "/agents/{agentID}",
    summary="Update an agent's config, secrets, or blueprint (requires member)",
)
async def update_agent(
    load: LoadChanged, body: schemas.UpdateAgentRequest, ctx: Ctx, db: Db
) -> schemas.Agent:
    agent = await load()
    changed = await service.update_agent(ctx, db, agent, body)
    await events.commit(db, ctx.broker, agent, AgentEventKind.UPDATED, changed=changed)
    return service.to_schema(agent)


@deleting(router, "/agents/{agentID}", summary="Soft-delete an agent (requires admin)")
async def delete_agent(agent: DeletedAgent, ctx: Ctx, db: Db) -> None:
    await service.delete_agent(db, agent)
    await events.commit(db, ctx.broker, agent, AgentEventKind.DELETED)


@router.patch(
    "/agents/{agentID}/status",
    summary="Transition an agent's status (requires admin)",
    description=(
        "draft → live, draft → archived, live → draft, live → archived, archived → draft. Going live "
        "requires a blueprint that lints clean (422 `agent.lint_failed` lists the errors) and, when "
        "the owner gates publishing on agent tests, a passing test run of this version (409 "
        "`agent.tests_failed` / `agent.tests_not_run`)."
    ),
)
async def update_agent_status(
    load: LoadPublished, body: schemas.UpdateAgentStatusRequest, ctx: Ctx, db: Db
) -> schemas.Agent:
    agent = await load()
    if body.status is AgentStatus.LIVE and agent.status != AgentStatus.LIVE.value:
        await agent_tests.check_publish_gate(db, agent)  # 409 when the owner gates on tests
    changed = await service.set_status(db, agent, body.status, keys=ctx.settings)
    await events.commit(db, ctx.broker, agent, AgentEventKind.STATUS_CHANGED, changed=changed)
    return service.to_schema(agent)


@router.post(
    "/agents/{agentID}/lint",
    summary="Lint an agent's blueprint (requires viewer)",
    description=(
        "Pass a `blueprint` in the request body to lint that instead of the agent's saved blueprint. "
        "Useful for pre-save validation in the editor."
    ),
    # The contract's body is a `LintAgentRequest` and required; an empty body or `{}` (lint the
    # saved blueprint) is still accepted.
    openapi_extra={"requestBody": {"required": True}},
)
async def lint_agent(
    load: LoadViewed,
    ctx: Ctx,
    db: Db,
    body: Annotated[schemas.LintAgentRequest, Body(default_factory=schemas.LintAgentRequest)],
) -> schemas.AgentLintDiagnostics:
    agent = await load()
    blueprint = body.blueprint if body.blueprint else Blueprint.model_validate(agent.blueprint)
    diagnostics = await service.lint_agent_blueprint(db, agent, blueprint)
    diagnostics += service.lint_agent_voice(agent, ctx.settings)
    return schemas.AgentLintDiagnostics(
        errors=[d.render() for d in diagnostics],
        diagnostics=[schemas.LintDiagnostic(**vars(d)) for d in diagnostics],
    )
