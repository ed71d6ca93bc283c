"""HTTP: the agent endpoints of @octavus/cli 2.0.0 (`octavus validate|sync|list|get`) and of the
server SDK's `agents.list()` / `agents.get(id)`, under `/api/agents`.

Shapes and status codes are those docs/octavus-wire.md records; errors carry the `Error` envelope
plus `error` (see `parley_common.octavus.routes`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status

from parley_catalog.agents import events
from parley_catalog.deps import Ctx, Db
from parley_catalog.octavus import schemas, service
from parley_catalog.octavus.auth import KeyReader, KeyWriter
from parley_catalog.routing import operation_ids
from parley_common.auth_contract import MemberRole
from parley_common.catalog_contract import AgentEventKind
from parley_common.octavus import ValidationResult
from parley_common.octavus.routes import OctavusRoute

router = APIRouter(
    prefix="/api/agents",
    tags=["octavus"],
    route_class=OctavusRoute,
    generate_unique_id_function=operation_ids("octavus"),
)

AgentRef = Annotated[
    str, Path(min_length=1, max_length=200, description="Agent ID, or its slug with `?by=slug`.")
]
By = Annotated[Literal["slug", "id"] | None, Query(description="`slug`: the path names the agent by slug.")]


@router.post(
    "/validate",
    summary="Validate an Octavus agent definition without saving it (`octavus validate`)",
)
async def validate_agent(body: schemas.DefinitionBody, ctx: Ctx, principal: KeyReader) -> ValidationResult:
    await service.project_of(ctx, principal, MemberRole.VIEWER)
    return service.validate(body)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an Octavus protocol agent in the API key's project (`octavus sync`, new slug)",
    description="422 `request.validation_failed` when the definition has errors (listed in "
    "`params.errors`), 409 `resource.conflict` when the slug is taken in the project.",
)
async def create_agent(
    body: schemas.DefinitionBody, ctx: Ctx, db: Db, principal: KeyWriter
) -> schemas.WriteResult:
    project = await service.project_of(ctx, principal, MemberRole.MEMBER)
    agent = await service.create(ctx, db, project, body)
    await events.commit(db, ctx.broker, agent, AgentEventKind.CREATED)
    return schemas.WriteResult(agentId=str(agent.id), message="Agent created")


@router.get(
    "",
    summary="List the Octavus protocol agents of the API key's project (`octavus list`)",
)
async def list_agents(ctx: Ctx, db: Db, principal: KeyReader) -> schemas.AgentList:
    project = await service.project_of(ctx, principal, MemberRole.VIEWER)
    return await service.list_for(db, project)


@router.get(
    "/{ref}",
    response_model_exclude_none=True,
    summary="Get an Octavus protocol agent by ID, or by slug with `?by=slug` (`octavus get`)",
)
async def get_agent(ref: AgentRef, ctx: Ctx, db: Db, principal: KeyReader, by: By = None) -> schemas.AgentOut:
    project = await service.project_of(ctx, principal, MemberRole.VIEWER)
    if by == "slug":
        agent = await service.find_by_slug(db, project, ref)
    else:
        agent = await service.find_by_id(db, project, ref)
    return service.out(agent)


@router.patch(
    "/{ref}",
    summary="Replace an Octavus agent's protocol and prompts (`octavus sync`, existing slug)",
    description="Settings are kept (sync never changes them). 422 `request.validation_failed` "
    "when the new definition has errors.",
)
async def update_agent(
    ref: AgentRef, body: schemas.UpdateBody, ctx: Ctx, db: Db, principal: KeyWriter, by: By = None
) -> schemas.WriteResult:
    project = await service.project_of(ctx, principal, MemberRole.MEMBER)
    if by == "slug":
        agent = await service.find_by_slug(db, project, ref, lock=True)
    else:
        agent = await service.find_by_id(db, project, ref, lock=True)
    changed = await service.update(ctx, db, agent, body)
    await events.commit(db, ctx.broker, agent, AgentEventKind.UPDATED, changed=changed)
    return schemas.WriteResult(
        agentId=str(agent.id), message="Agent updated" if changed else "Agent unchanged"
    )
