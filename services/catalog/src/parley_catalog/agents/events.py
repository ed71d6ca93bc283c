"""Agent change events on `catalog.events.agent.<kind>`: runtimes drop cached snapshots on them."""

from __future__ import annotations

import structlog
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agents.models import Agent
from parley_catalog.timeutil import utcnow
from parley_common import subjects
from parley_common.catalog_contract import AgentEvent, AgentEventKind, AgentStatus

log = structlog.get_logger(__name__)


async def publish(broker: NatsBroker, agent: Agent, kind: AgentEventKind) -> None:
    """Best effort, after the commit: a runtime that misses one still sees the new `version` the
    next time it resolves the agent, so a lost event delays a refresh and never corrupts one."""
    event = AgentEvent(
        kind=kind, agent_id=agent.id, version=agent.version, status=AgentStatus(agent.status), at=utcnow()
    )
    try:
        await broker.publish(event, subjects.agent_event(kind.value))
    except Exception as exc:
        log.warning("catalog.agent_event_publish_failed", agent_id=str(agent.id), kind=kind, error=str(exc))


async def commit(
    db: AsyncSession, broker: NatsBroker, agent: Agent, kind: AgentEventKind, *, changed: bool = True
) -> None:
    """Commit the request's change to `agent` and, when there was one, announce it."""
    await db.commit()
    if changed:
        await publish(broker, agent, kind)
