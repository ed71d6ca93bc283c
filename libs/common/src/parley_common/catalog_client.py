"""What other services ask the catalog over the bus (`catalog_contract` has the models)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from parley_common import subjects
from parley_common.bus import request
from parley_common.catalog_contract import AgentResolveReply, AgentResolveRequest, AgentSnapshot
from parley_common.errors import Codes, ParleyError, reply_error


async def resolve_agent(broker: NatsBroker, agent_id: str, *, timeout_s: float) -> AgentSnapshot:
    """The agent's runtime snapshot (config, definition, secrets) from `catalog.agent.resolve`; the
    catalog's error (an unknown agent: `not_found`) is raised as the same `ParleyError`."""
    reply = await request(
        broker,
        subjects.CATALOG_AGENT_RESOLVE,
        AgentResolveRequest(agent_id=agent_id),
        AgentResolveReply,
        timeout=timeout_s,
    )
    if reply.ok and reply.snapshot is not None:
        return reply.snapshot
    if reply.error is None:
        raise ParleyError(Codes.NOT_FOUND, params={"resource": "agent"})
    raise reply_error(reply.error, Codes.NOT_FOUND)
