"""HTTP: tool catalogues and execution per agent and per org, and the tool records.

- `GET /agents/{agentID}/tools`, `GET /orgs/{orgSlug}/tools`: the catalogue, a bare array of
  OpenAI function tools (viewer).
- `POST …/tools`: define a webhook tool (member). `POST …/tools/execute`: run one (member).
- `GET /tools?agent_id=…|org_slug=…`, `GET|PATCH|DELETE /tools/{toolID}`: the records (viewer to
  read, member to change).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated
from uuid import UUID

from fastapi import Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.access import check_owner, org_by_slug, owning_agent
from parley_catalog.agents import events
from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.deps import AgentsReader, AgentsWriter, Ctx, Db
from parley_catalog.loaded import Loader, loaded, loader
from parley_catalog.owner import AGENT, ORG, READ, WRITE, Owner, owner_routes
from parley_catalog.params import ToolID
from parley_catalog.routing import contract_router, deleting
from parley_catalog.tools import schemas, service
from parley_catalog.tools.models import Tool
from parley_common.auth_contract import MemberRole, Principal
from parley_common.catalog_contract import AgentEventKind, ToolDefinition, ToolResult
from parley_common.errors import Codes, ParleyError

router = contract_router("tools")


async def _commit_change(
    ctx: CatalogContext, db: AsyncSession, agent: Agent | None, org_id: UUID | None
) -> None:
    """Commit a change to a tool of `agent` (or, without one, of the org `org_id`) and announce it:
    it changes the snapshot of every agent whose catalogue holds the tool."""
    if agent is not None:
        changed = await agents.bump_versions(db, agent_ids=[agent.id])
    else:
        changed = await agents.bump_versions(db, org_id=org_id)
    await db.commit()
    await events.publish_all(ctx.broker, changed, AgentEventKind.UPDATED)


@owner_routes(
    router,
    "GET",
    "/tools",
    summaries={
        AGENT: "The agent's tool catalogue, OpenAI function format (requires viewer)",
        ORG: "The organization's tool catalogue, OpenAI function format (requires viewer)",
    },
    descriptions={AGENT: "Its own tools, then its organization's tools whose names it does not use itself."},
    operation_id="list{}Tools",
    access=READ,
)
async def list_catalogue(owner: Owner, db: Db) -> list[ToolDefinition]:
    return [service.definition(t) for t in await _catalogue(db, owner)]


@owner_routes(
    router,
    "POST",
    "/tools",
    summaries={
        AGENT: "Define a webhook tool of an agent (requires member)",
        ORG: "Define a webhook tool shared by an organization's agents (requires member)",
    },
    operation_id="create{}Tool",
    access=WRITE,
    lock=True,
    status_code=status.HTTP_201_CREATED,
)
async def create_tool(owner: Owner, body: schemas.CreateToolRequest, ctx: Ctx, db: Db) -> schemas.Tool:
    agent_id = owner.agent.id if owner.agent is not None else None
    tool = await service.create_tool(ctx, db, body, agent_id=agent_id, org_id=owner.org_id)
    await _commit_change(ctx, db, owner.agent, owner.org_id)
    return service.to_schema(tool)


_EXECUTE = "Answered with 200 whenever the executor runs: failures are `{success: false, error, code}`."


@owner_routes(
    router,
    "POST",
    "/tools/execute",
    summaries={
        AGENT: "Execute a tool of the agent's catalogue by `function` (or legacy `name`) (requires member)",
        ORG: "Execute an organization tool by `function` (or legacy `name`) (requires member)",
    },
    descriptions={AGENT: _EXECUTE, ORG: _EXECUTE},
    operation_id="execute{}Tool",
    access=WRITE,
)
async def execute_tool(owner: Owner, body: schemas.ExecuteToolRequest, ctx: Ctx, db: Db) -> ToolResult:
    catalogue = await _catalogue(db, owner)
    await db.close()  # the webhook may take a while: give the connection back first
    return await service.execute(ctx, catalogue, body)


async def _catalogue(db: AsyncSession, owner: Owner) -> list[Tool]:
    """An agent's catalogue (its own tools, then its org's) or an organization's tools."""
    if owner.agent is not None:
        return await service.agent_catalogue(db, owner.agent.id, owner.agent.owner_org_id)
    return await service.owned_tools(db, org_id=owner.org_id)


@router.get(
    "/tools",
    summary="The tool records of an agent or an organization (requires viewer)",
    description="Exactly one of `agent_id` and `org_slug`. Agent tools only (not the inherited org tools).",
)
async def list_tools(
    ctx: Ctx,
    db: Db,
    principal: AgentsReader,
    agent_id: Annotated[UUID | None, Query()] = None,
    org_slug: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[schemas.Tool]:
    if (agent_id is None) == (org_slug is None):
        raise ParleyError(Codes.VALIDATION_FAILED, "Give exactly one of agent_id and org_slug.")
    if agent_id is not None:
        agent = await agents.load_for(ctx, db, principal, agent_id, MemberRole.VIEWER)
        tools = await service.owned_tools(db, agent_id=agent.id)
    else:
        assert org_slug is not None
        org_id = await org_by_slug(ctx, principal, org_slug, MemberRole.VIEWER)
        tools = await service.owned_tools(db, org_id=org_id)
    return [service.to_schema(t) for t in tools]


async def _load_tool(
    ctx: CatalogContext,
    db: AsyncSession,
    principal: Principal,
    tool_id: UUID,
    min_role: MemberRole,
    *,
    lock: bool = False,
) -> tuple[Tool, Agent | None]:
    """The tool and, for an agent tool, its agent; 404 unless the caller may see the owner.
    `lock`: the tool is locked for the transaction (after the check)."""
    tool = await service.get_tool(db, tool_id)
    agent: Agent | None = None
    if tool.owner_agent_id is not None:
        agent = await owning_agent(ctx, db, principal, tool.owner_agent_id, min_role, "tool")
    else:
        await check_owner(
            ctx,
            principal,
            owner_user_id=None,
            owner_org_id=tool.owner_org_id,
            min_role=min_role,
            resource="tool",
        )
    if lock:
        tool = await service.get_tool(db, tool.id, lock=True)
    return tool, agent


ToolOf = tuple[Tool, Agent | None]  # the tool and, for an agent tool, its agent
_locked = partial(_load_tool, lock=True)
ViewedTool = Annotated[ToolOf, loaded(_load_tool, ToolID, AgentsReader, MemberRole.VIEWER)]
LoadChangedTool = Annotated[Loader[ToolOf], loader(_locked, ToolID, AgentsWriter, MemberRole.MEMBER)]
DeletedTool = Annotated[ToolOf, loaded(_locked, ToolID, AgentsWriter, MemberRole.MEMBER)]


@router.get(
    "/tools/{toolID}",
    summary="Get a tool record (requires viewer on its agent or organization)",
)
async def get_tool(viewed: ViewedTool) -> schemas.Tool:
    tool, _ = viewed
    return service.to_schema(tool)


@router.patch(
    "/tools/{toolID}",
    summary="Update a tool (requires member on its agent or organization)",
)
async def update_tool(
    load: LoadChangedTool, body: schemas.UpdateToolRequest, ctx: Ctx, db: Db
) -> schemas.Tool:
    tool, agent = await load()
    await service.update_tool(ctx, db, tool, body)
    await _commit_change(ctx, db, agent, tool.owner_org_id)
    return service.to_schema(tool)


@deleting(router, "/tools/{toolID}", summary="Delete a tool (requires member on its agent or organization)")
async def delete_tool(deleted: DeletedTool, ctx: Ctx, db: Db) -> None:
    tool, agent = deleted
    await service.delete_tool(db, tool)
    await _commit_change(ctx, db, agent, tool.owner_org_id)
