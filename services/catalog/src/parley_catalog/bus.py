"""Every bus subscription of the catalog, declared here and nowhere else.

- `catalog.agent.access`, `catalog.agent.resolve`: core request/reply in the queue group `catalog`
  (one replica answers each request), answered by `access` and `resolve` below.
- `conv.events.>` of the stream `CONVERSATIONS`: a JetStream pull loop on the durable consumer
  `catalog-conversations` shared by the replicas; conversations/consumer.py persists the history.
- `agent_tests.results.>` of the stream `AGENT_TEST_RESULTS`: a JetStream pull loop on the durable
  consumer `catalog-agent-test-results`; agent_tests/consumer.py stores the runs' progress and verdicts.

Two more come with the shared plumbing every service has: `health.catalog` (the service kit's
health ping) and `auth.events.revoked` (the credential cache of `AuthClient`, dropping revoked
credentials). What the catalog publishes: agent events (agents/events.py) and agent-test jobs
(agent_tests/runs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from fastapi import FastAPI
from faststream.nats import NatsBroker
from pydantic import BaseModel

from parley_catalog import secretstore
from parley_catalog.access import can_view, not_found
from parley_catalog.agent_tests.consumer import ResultConsumer
from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.chatty import service as chatty
from parley_catalog.context import CatalogContext
from parley_catalog.conversations.consumer import ConversationConsumer
from parley_catalog.tools import service as tools
from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.blueprint import Blueprint
from parley_common.bus import bus_handler
from parley_common.catalog_contract import (
    AgentAccessReply,
    AgentAccessRequest,
    AgentConfig,
    AgentResolveReply,
    AgentResolveRequest,
    AgentSnapshot,
    AgentStatus,
)
from parley_common.jetstream import DurableConsumer
from parley_common.kit.service import ServiceKit

Req = TypeVar("Req", bound=BaseModel)


@dataclass(frozen=True)
class Consumers:
    """The catalog's JetStream pull loops (tests read their counters)."""

    conversations: ConversationConsumer
    test_results: ResultConsumer


def subscribe(kit: ServiceKit, ctx: CatalogContext) -> Consumers:
    """Declare every subscription; the kit's lifespan starts them with the broker."""
    answer(kit.broker, subjects.CATALOG_AGENT_ACCESS, AgentAccessRequest, ctx, access)
    answer(kit.broker, subjects.CATALOG_AGENT_RESOLVE, AgentResolveRequest, ctx, resolve)
    consumers = Consumers(
        conversations=ConversationConsumer(ctx.settings, ctx.db),
        test_results=ResultConsumer(ctx.settings, ctx.db),
    )
    consume(kit, consumers.conversations, consumers.test_results)
    return consumers


def answer(
    broker: NatsBroker,
    subject: str,
    request_model: type[Req],
    ctx: CatalogContext,
    handler: Callable[[CatalogContext, Req], Awaitable[BaseModel]],
) -> None:
    """Request/reply on `subject` in the catalog's queue group (one replica answers each request);
    a malformed request is answered with an error (`bus_handler`)."""

    async def reply(req: Req) -> BaseModel:
        return await handler(ctx, req)

    reply.__name__ = reply.__qualname__ = handler.__name__
    reply.__doc__ = handler.__doc__
    broker.subscriber(subject, queue=subjects.QUEUE_CATALOG)(bus_handler(request_model)(reply))


def consume(kit: ServiceKit, *consumers: DurableConsumer) -> None:
    """Run durable pull loops while the broker is up: started after it, stopped before it, and
    stopped together: each lets the fetch under way end first (up to `FETCH_TIMEOUT_S`), so one
    after the other would add those waits up at every shutdown."""

    @kit.part
    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        started: list[DurableConsumer] = []
        try:
            for consumer in consumers:
                await consumer.start(kit.broker.connection)
                started.append(consumer)
            yield
        finally:
            await asyncio.gather(*(consumer.stop() for consumer in started))


# ------------------------------------------------------------------------------ request/reply


def _agent_uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError as exc:
        raise not_found("agent") from exc


def _token_allows(principal: Principal, agent: Agent) -> bool:
    """A client token reaches only the agent it names."""
    try:
        named = UUID(principal.agent_id or "")
    except ValueError:
        return False
    return named == agent.id


def _org_allows(principal: Principal, agent: Agent) -> bool:
    """An org's API key, and every client token it minted, reach only that org's agents: even a
    live agent of another owner (open to everyone else) is not there for them."""
    return principal.org_id is None or principal.org_id == agent.owner_org_id


async def access(ctx: CatalogContext, req: AgentAccessRequest) -> AgentAccessReply:
    """May this principal open a session with this agent? Live agents are open to any caller
    (a client token: only the agent it names; an org's key or token: only its org's agents);
    others to those who may view them."""
    agent_id = _agent_uuid(req.agent_id)
    async with ctx.db.sessions() as db:
        agent = await agents.get_live_row(db, agent_id)
    principal = req.principal
    if agent is None:
        raise not_found("agent")
    if principal.kind is CredentialKind.CLIENT_TOKEN and not _token_allows(principal, agent):
        raise not_found("agent")
    if not _org_allows(principal, agent):
        raise not_found("agent")
    if agent.status != AgentStatus.LIVE.value and not await can_view(
        ctx, principal, owner_user_id=agent.owner_user_id, owner_org_id=agent.owner_org_id
    ):
        raise not_found("agent")
    config = AgentConfig.model_validate(agent.config)
    return AgentAccessReply(
        ok=True,
        # A live agent's answer read nothing of the principal but its kind, org and named agent
        # (above), and nothing outside the agent's row: the gateway may reuse it until an agent
        # event (agents/events.py) names the agent. Keep it so: a check of anything else here
        # (a membership, a scope, the user) must set this to False for the answers it decides.
        shared=agent.status == AgentStatus.LIVE.value,
        agent_id=str(agent.id),
        status=AgentStatus(agent.status),
        version=agent.version,
        owner_org_id=agent.owner_org_id,
        model=chatty.model_name(config),
        voice=chatty.voice_name(config),
        voice_config=config.voice,
    )


async def resolve(ctx: CatalogContext, req: AgentResolveRequest) -> AgentResolveReply:
    """What the runtime executes, secrets decrypted, with the version to cache it under."""
    agent_id = _agent_uuid(req.agent_id)
    async with ctx.db.sessions() as db:
        # One snapshot of the database: the agent and its tools as of the same moment.
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        agent = await agents.get_live_row(db, agent_id)
        if agent is None:
            raise not_found("agent")
        catalogue = await tools.agent_catalogue(db, agent.id, agent.owner_org_id)
    snapshot = AgentSnapshot(
        agent_id=agent.id,
        version=agent.version,
        status=AgentStatus(agent.status),
        owner_user_id=agent.owner_user_id,
        owner_org_id=agent.owner_org_id,
        config=AgentConfig.model_validate(agent.config),
        blueprint=Blueprint.model_validate(agent.blueprint),
        protocol=agent.protocol,
        secrets=secretstore.reveal(ctx.box, secretstore.load(agent.secrets)),
        tools=[tools.definition(t) for t in catalogue],
    )
    return AgentResolveReply(ok=True, snapshot=snapshot)
