"""Agent change events on `catalog.events.agent.<kind>`: runtimes drop cached snapshots on them,
and the session gateway the access answers it reuses (`parley_session_gateway.agent_access`)."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agents.models import Agent
from parley_catalog.timeutil import utcnow
from parley_common import subjects
from parley_common.bus import flushed
from parley_common.catalog_contract import AgentEvent, AgentEventKind, AgentStatus

log = structlog.get_logger(__name__)

# How long a change's answer may wait for NATS to confirm it holds the events (see `publish_all`).
FLUSH_TIMEOUT_S = 1


async def publish(broker: NatsBroker, agent: Agent, kind: AgentEventKind) -> None:
    await publish_all(broker, [agent], kind)


async def publish_all(broker: NatsBroker, agents: Sequence[Agent], kind: AgentEventKind) -> None:
    """Best effort, after the commit: a runtime that misses one still sees the new `version` the
    next time it resolves the agent, so a lost event delays a refresh and never corrupts one; the
    gateway's access answers also expire (and are dropped when its connection comes back).

    The events are flushed to NATS before the change is answered: a client told "deleted" (or
    "paused") that opens a socket at once finds the gateways already holding the event, as it found
    the row changed when every socket asked the catalog."""
    for agent in agents:
        event = AgentEvent(
            kind=kind, agent_id=agent.id, version=agent.version, status=AgentStatus(agent.status), at=utcnow()
        )
        try:
            await broker.publish(event, subjects.agent_event(kind.value))
        except Exception as exc:
            log.warning(
                "catalog.agent_event_publish_failed", agent_id=str(agent.id), kind=kind, error=str(exc)
            )
    if not agents:
        return
    try:
        nc = broker.connection
        if nc.is_connected:  # away: the events wait in its buffer, and the gateways forget on reconnect
            await flushed(nc, timeout=FLUSH_TIMEOUT_S)  # the events first, then the PING
    except Exception as exc:
        log.warning("catalog.agent_event_flush_failed", kind=kind, error=str(exc))


async def commit(
    db: AsyncSession, broker: NatsBroker, agent: Agent, kind: AgentEventKind, *, changed: bool = True
) -> None:
    """Commit the request's change to `agent` and, when there was one, announce it."""
    await db.commit()
    if changed:
        await publish(broker, agent, kind)
