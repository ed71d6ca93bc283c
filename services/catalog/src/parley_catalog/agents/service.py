"""Agent logic: listing with search, create (optionally from a template), update, status, delete.

Every change bumps `version` (runtimes key their caches on it) and the router publishes an event
after the commit.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog import secretstore
from parley_catalog.access import OwnedLoader, OwnerIds, live_row
from parley_catalog.agents import schemas
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.convert import from_row
from parley_catalog.lint.rules import Diagnostic
from parley_catalog.lint.service import lint_blueprint
from parley_catalog.lint.voice import lint_voice
from parley_catalog.templates.models import Template
from parley_catalog.timeutil import created_now, utcnow
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import AgentConfig, AgentStatus
from parley_common.errors import Codes, ParleyError
from parley_common.speech_contract import SpeechProviderKeys

DEFAULT_NAME = "Untitled agent"
EMPTY_BLUEPRINT: dict[str, Any] = {"version": "1", "entries": []}
# draft ⇄ live, either → archived, archived → draft (restore). Same status: a no-op.
TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    AgentStatus.DRAFT: frozenset({AgentStatus.LIVE, AgentStatus.ARCHIVED}),
    AgentStatus.LIVE: frozenset({AgentStatus.DRAFT, AgentStatus.ARCHIVED}),
    AgentStatus.ARCHIVED: frozenset({AgentStatus.DRAFT}),
}


def to_schema(agent: Agent) -> schemas.Agent:
    secrets = [
        schemas.AgentSecret(key=s.key, value=s.masked, description=s.description)
        for s in secretstore.load(agent.secrets)
    ]
    return from_row(schemas.Agent, agent, secrets=secrets)


def _dump_config(config: AgentConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", exclude_none=True)


def _dump_blueprint(blueprint: Blueprint) -> dict[str, Any]:
    return blueprint.model_dump(mode="json")


async def create_agent(
    ctx: CatalogContext,
    db: AsyncSession,
    body: schemas.CreateAgentRequest,
    owner: OwnerIds,
    *,
    template: Template | None = None,
    protocol: dict[str, Any] | None = None,
) -> Agent:
    """A new draft. From a template: its config, secrets and blueprint, each overridden by the
    request's when given (secrets key by key)."""
    config: dict[str, Any] = dict(template.config) if template else {"name": DEFAULT_NAME}
    blueprint: dict[str, Any] = dict(template.blueprint) if template else dict(EMPTY_BLUEPRINT)
    stored = secretstore.load(template.secrets) if template else []
    if body.config is not None:
        config = _dump_config(body.config)
    if body.blueprint is not None:
        blueprint = _dump_blueprint(body.blueprint)
    if body.secrets is not None:
        stored = secretstore.merge(stored, secretstore.seal(ctx.box, secretstore.inputs(body.secrets), []))
    agent = Agent(
        owner_user_id=owner.user_id,
        owner_org_id=owner.org_id,
        template_id=template.id if template else None,
        config=config,
        secrets=secretstore.dump(stored),
        blueprint=blueprint,
        protocol=protocol,
        status=AgentStatus.DRAFT.value,
        version=1,
        **created_now(),
    )
    db.add(agent)
    await db.flush()
    return agent


async def get_live_row(db: AsyncSession, agent_id: UUID, *, lock: bool = False) -> Agent | None:
    """The agent unless soft-deleted (`live` as in "not deleted", whatever its status)."""
    return await live_row(db, Agent, agent_id, lock=lock)


# The agent if the caller holds `min_role` on its owner, else 404 / 403.
load_for = OwnedLoader(Agent, "agent")


async def lint_agent_blueprint(db: AsyncSession, agent: Agent, blueprint: Blueprint) -> list[Diagnostic]:
    return await lint_blueprint(
        db, blueprint, owner_user_id=agent.owner_user_id, owner_org_id=agent.owner_org_id
    )


def lint_agent_voice(
    agent: Agent,
    keys: SpeechProviderKeys,
    *,
    config: AgentConfig | None = None,
    secret_names: set[str] | None = None,
) -> list[Diagnostic]:
    """`config.voice` of the agent (or of the config / secrets about to replace its own)."""
    voice = (config or AgentConfig.model_validate(agent.config)).voice
    if secret_names is None:
        secret_names = {s.key for s in secretstore.load(agent.secrets)}
    return lint_voice(voice, secret_names=secret_names, keys=keys)


def _lint_failed(diagnostics: list[Diagnostic]) -> ParleyError:
    errors = [d.render() for d in diagnostics]
    return ParleyError(Codes.AGENT_LINT_FAILED, params={"count": len(errors), "errors": errors})


def _touch(agent: Agent) -> None:
    agent.version += 1
    agent.updated_at = utcnow()


async def update_agent(
    ctx: CatalogContext,
    db: AsyncSession,
    agent: Agent,
    body: schemas.UpdateAgentRequest,
    *,
    protocol: dict[str, Any] | None = None,
) -> bool:
    """Apply the given fields; False when nothing was given. A live agent's new blueprint must
    lint clean (it would otherwise go out to every new session at once)."""
    if body.config is None and body.secrets is None and body.blueprint is None and protocol is None:
        return False
    if body.blueprint is not None and agent.status == AgentStatus.LIVE.value and agent.protocol is None:
        diagnostics = await lint_agent_blueprint(db, agent, body.blueprint)
        if diagnostics:
            raise _lint_failed(diagnostics)
    if (body.config is not None or body.secrets is not None) and agent.status == AgentStatus.LIVE.value:
        # A live agent's voice must keep working: no unknown engine, no key taken away.
        names = {s.key for s in body.secrets} if body.secrets is not None else None
        diagnostics = lint_agent_voice(agent, ctx.settings, config=body.config, secret_names=names)
        if diagnostics:
            raise _lint_failed(diagnostics)
    if body.config is not None:
        agent.config = _dump_config(body.config)
    if body.secrets is not None:
        agent.secrets = secretstore.write(ctx.box, secretstore.inputs(body.secrets), agent.secrets)
    if body.blueprint is not None:
        agent.blueprint = _dump_blueprint(body.blueprint)
    if protocol is not None:
        agent.protocol = protocol
    _touch(agent)
    await db.flush()
    return True


async def set_status(
    db: AsyncSession, agent: Agent, status: AgentStatus, *, keys: SpeechProviderKeys | None = None
) -> bool:
    """Move to `status`; False when the agent already has it (no change, no event)."""
    current = AgentStatus(agent.status)
    if status is current:
        return False
    if status not in TRANSITIONS[current]:
        raise ParleyError(
            Codes.AGENT_INVALID_STATUS_TRANSITION,
            params={"from_status": current.value, "to_status": status.value},
        )
    # Protocol agents are validated by the protocol library when their protocol is written.
    if status is AgentStatus.LIVE and agent.protocol is None:
        diagnostics = await lint_agent_blueprint(db, agent, Blueprint.model_validate(agent.blueprint))
        diagnostics += lint_agent_voice(agent, keys or SpeechProviderKeys())
        if diagnostics:
            raise _lint_failed(diagnostics)
    agent.status = status.value
    _touch(agent)
    await db.flush()
    return True


async def delete_agent(db: AsyncSession, agent: Agent) -> None:
    agent.deleted_at = utcnow()
    _touch(agent)
    await db.flush()


async def bump_versions(
    db: AsyncSession, *, agent_ids: list[UUID] | None = None, org_id: UUID | None = None
) -> list[Agent]:
    """Bump the version of agents whose snapshot changed through something else (their tools)."""
    query = update(Agent).where(Agent.deleted_at.is_(None)).values(version=Agent.version + 1)
    if agent_ids is not None:
        query = query.where(Agent.id.in_(agent_ids))
    else:
        query = query.where(Agent.owner_org_id == org_id)
    return list((await db.scalars(query.returning(Agent))).all())
