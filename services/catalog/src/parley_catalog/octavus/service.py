"""Octavus protocol agents over the catalog's agents: the project of an API key, definition
checks, lookups by slug or id, create and update (through `parley_catalog.agents.service`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.access import check_owner, not_found
from parley_catalog.agents import schemas as agent_schemas
from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.octavus import schemas
from parley_common.auth_contract import MemberRole, Principal
from parley_common.catalog_contract import AgentConfig
from parley_common.errors import Codes, ParleyError
from parley_common.octavus import (
    AgentDefinition,
    AgentPrompt,
    AgentSettings,
    Issue,
    ValidationResult,
    has_errors,
    validate_definition,
)

MAX_DESCRIPTION = 5000  # AgentConfig.description, where settings.description is copied
MAX_LISTED = 1000


@dataclass(frozen=True)
class Project:
    """Where an API key's Octavus agents live: its org when org-owned, else its user."""

    user_id: UUID | None
    org_id: UUID | None

    @property
    def id(self) -> UUID:
        owner = self.org_id or self.user_id
        assert owner is not None
        return owner

    def clause(self) -> ColumnElement[bool]:
        """Rows owned by this project."""
        return Agent.owner_org_id == self.org_id if self.org_id else Agent.owner_user_id == self.user_id

    def owns(self, agent: Agent) -> bool:
        return agent.owner_user_id == self.user_id and agent.owner_org_id == self.org_id


async def project_of(ctx: CatalogContext, principal: Principal, min_role: MemberRole) -> Project:
    """The key's project, once the key's user is checked to hold `min_role` on it."""
    project = (
        Project(user_id=None, org_id=principal.org_id)
        if principal.org_id is not None
        else Project(user_id=principal.user_id, org_id=None)
    )
    await check_owner(
        ctx,
        principal,
        owner_user_id=project.user_id,
        owner_org_id=project.org_id,
        min_role=min_role,
        resource="project",
    )
    return project


def _catalog_issues(settings: dict[str, Any], prompts: list[AgentPrompt]) -> list[Issue]:
    """What the catalog needs beyond the protocol library's checks."""
    issues: list[Issue] = []
    description = settings.get("description")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION:
        issues.append(Issue(path="settings.description", message=f"at most {MAX_DESCRIPTION} characters"))
    names = [p.name for p in prompts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        issues.append(Issue(path=f"prompts.{name}", message=f"duplicate prompt `{name}`"))
    return issues


def check(settings: dict[str, Any], protocol: str, prompts: list[AgentPrompt]) -> list[Issue]:
    """Every issue of the definition: protocol schema and cross-references, settings, prompts."""
    found = validate_definition(protocol, settings, {p.name: p.content for p in prompts})
    return found + _catalog_issues(settings, prompts)


def validate(body: schemas.DefinitionBody) -> ValidationResult:
    return ValidationResult.from_issues(check(body.settings, body.protocol, body.prompts))


def _require_valid(settings: dict[str, Any], protocol: str, prompts: list[AgentPrompt]) -> AgentSettings:
    issues = check(settings, protocol, prompts)
    if has_errors(issues):
        result = ValidationResult.from_issues(issues)
        first = result.errors[0]
        raise ParleyError(
            Codes.VALIDATION_FAILED,
            f"The agent definition has {len(result.errors)} error(s); first: {first.message} ({first.path})",
            params={"errors": [e.model_dump() for e in result.errors]},
        )
    return AgentSettings.model_validate(settings)


def _stored(settings: AgentSettings, protocol: str, prompts: list[AgentPrompt]) -> dict[str, Any]:
    definition = AgentDefinition(settings=settings, protocol=protocol, prompts=prompts)
    return definition.model_dump(mode="json", exclude_none=True)


def definition_of(agent: Agent) -> AgentDefinition:
    assert agent.protocol is not None
    return AgentDefinition.model_validate(agent.protocol)


async def find_by_slug(db: AsyncSession, project: Project, slug: str, *, lock: bool = False) -> Agent:
    query = select(Agent).where(project.clause(), Agent.slug == slug, Agent.deleted_at.is_(None))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    agent = await db.scalar(query)
    if agent is None or agent.protocol is None:
        raise not_found("agent")
    return agent


async def find_by_id(db: AsyncSession, project: Project, raw_id: str, *, lock: bool = False) -> Agent:
    """Only protocol agents of the key's project: others are 404 here, whatever the caller's rights
    elsewhere (the Kivox routes serve those)."""
    try:
        agent_id = UUID(raw_id)
    except ValueError as exc:
        raise not_found("agent") from exc
    agent = await agents.get_live_row(db, agent_id, lock=lock)
    if agent is None or agent.protocol is None or not project.owns(agent):
        raise not_found("agent")
    return agent


async def create(
    ctx: CatalogContext, db: AsyncSession, project: Project, body: schemas.DefinitionBody
) -> Agent:
    """A new draft protocol agent; 422 when the definition has errors, 409 when the slug is taken."""
    settings = _require_valid(body.settings, body.protocol, body.prompts)
    config = AgentConfig(name=settings.name, description=settings.description)
    taken = await db.scalar(
        select(Agent.id).where(
            project.clause(),
            Agent.slug == settings.slug,
            Agent.deleted_at.is_(None),
        )
    )
    if taken is not None:
        raise _slug_taken(settings.slug)
    try:
        agent = await agents.create_agent(
            ctx,
            db,
            agent_schemas.CreateAgentRequest(config=config),
            project,
            protocol=_stored(settings, body.protocol, body.prompts),
        )
        agent.slug = settings.slug
        await db.flush()
    except IntegrityError as exc:  # created concurrently under the same slug
        await db.rollback()
        raise _slug_taken(settings.slug) from exc
    return agent


def _slug_taken(slug: str) -> ParleyError:
    return ParleyError(Codes.CONFLICT, f"An agent with slug {slug} already exists.", params={"slug": slug})


async def update(ctx: CatalogContext, db: AsyncSession, agent: Agent, body: schemas.UpdateBody) -> bool:
    """New protocol (and prompts, when given) under the stored settings; False when identical."""
    current = definition_of(agent)
    prompts = body.prompts if body.prompts is not None else current.prompts
    settings_data = current.settings.model_dump(exclude_none=True)
    settings = _require_valid(settings_data, body.protocol, prompts)
    stored = _stored(settings, body.protocol, prompts)
    if stored == agent.protocol:
        return False
    return await agents.update_agent(ctx, db, agent, agent_schemas.UpdateAgentRequest(), protocol=stored)


async def list_for(db: AsyncSession, project: Project) -> schemas.AgentList:
    rows = await db.scalars(
        select(Agent)
        .where(
            project.clause(), Agent.slug.is_not(None), Agent.protocol.is_not(None), Agent.deleted_at.is_(None)
        )
        .order_by(Agent.created_at.desc(), Agent.id.desc())
        .limit(MAX_LISTED)
    )
    return schemas.AgentList(agents=[summary(a, project) for a in rows])


def summary(agent: Agent, project: Project) -> schemas.AgentSummary:
    settings = definition_of(agent).settings
    return schemas.AgentSummary(
        slug=settings.slug,
        id=str(agent.id),
        name=settings.name,
        description=settings.description,
        format=settings.format,
        createdAt=agent.created_at,
        updatedAt=agent.updated_at,
        projectId=str(project.id),
    )


def out(agent: Agent) -> schemas.AgentOut:
    definition = definition_of(agent)
    return schemas.AgentOut(
        settings=schemas.SettingsOut.model_validate(definition.settings.model_dump()),
        protocol=definition.protocol,
        prompts=definition.prompts,
        id=str(agent.id),
    )
