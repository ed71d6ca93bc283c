"""`AgentAccess`: the catalog's shared answers reused, and dropped on every change the catalog
announces, on a reconnect, after their TTL; never across tenants, never a refusal or a draft's.

The catalog here is a table on FastStream's in-memory broker that answers with the catalog's own
rules (parley_catalog/bus.py `access`): a live agent is open to anyone but another org's
principals and client tokens naming another agent, and its answer is `shared`; a draft only to its
owner, not shared.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from unittest.mock import AsyncMock
from uuid import UUID

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.bus import bus_events, bus_handler, flushed
from parley_common.catalog_contract import (
    AgentAccessReply,
    AgentAccessRequest,
    AgentEvent,
    AgentEventKind,
    AgentStatus,
)
from parley_common.errors import ErrorEnvelope
from parley_session_gateway.agent_access import AgentAccess

ORG_A, ORG_B = uuid.uuid4(), uuid.uuid4()


@dataclass
class Agent:
    owner_org_id: UUID | None
    owner_user_id: UUID | None = None
    status: AgentStatus = AgentStatus.LIVE
    voice: str | None = None


@dataclass
class Catalog:
    agents: dict[str, Agent] = field(default_factory=dict)
    asked: list[AgentAccessRequest] = field(default_factory=list)
    hold: asyncio.Event | None = None  # answers are decided, then wait for it (in flight)

    def answer(self, req: AgentAccessRequest) -> AgentAccessReply:
        agent, who = self.agents.get(req.agent_id), req.principal
        refused = AgentAccessReply(
            ok=False, error=ErrorEnvelope(code="resource.not_found", message="no", doc_url="https://x.test")
        )
        if agent is None:
            return refused
        if who.kind is CredentialKind.CLIENT_TOKEN and who.agent_id != req.agent_id:
            return refused
        if who.org_id is not None and who.org_id != agent.owner_org_id:
            return refused
        live = agent.status is AgentStatus.LIVE
        if not live and not (who.org_id is None and who.user_id == agent.owner_user_id):
            return refused
        return AgentAccessReply(ok=True, agent_id=req.agent_id, voice=agent.voice, shared=live)


@asynccontextmanager
async def cached(ttl_s: float = 30.0) -> AsyncIterator[tuple[AgentAccess, Catalog, NatsBroker]]:
    broker = NatsBroker()
    catalog = Catalog()

    @broker.subscriber(subjects.CATALOG_AGENT_ACCESS)
    @bus_handler(AgentAccessRequest)
    async def access(req: AgentAccessRequest) -> AgentAccessReply:
        catalog.asked.append(req)
        reply = catalog.answer(req)  # read now, sent after the hold
        if catalog.hold is not None:
            await catalog.hold.wait()
        return reply

    agent_access = AgentAccess(broker, ttl_s=ttl_s)
    async with TestNatsBroker(broker) as test_broker:
        yield agent_access, catalog, test_broker


def key(org_id: UUID | None = None, user_id: UUID | None = None) -> Principal:
    """An API key (each call a different one, of a different user unless given)."""
    return Principal(
        kind=CredentialKind.API_KEY,
        credential_id=uuid.uuid4(),
        user_id=user_id or uuid.uuid4(),
        org_id=org_id,
        scopes=["sessions:write"],
    )


def token(agent_id: str, org_id: UUID | None) -> Principal:
    return Principal(
        kind=CredentialKind.CLIENT_TOKEN,
        credential_id=uuid.uuid4(),
        org_id=org_id,
        agent_id=agent_id,
        token_type="chat",
    )


async def announce(broker: NatsBroker, agent_id: str, kind: AgentEventKind, status: AgentStatus) -> None:
    event = AgentEvent(kind=kind, agent_id=UUID(agent_id), version=2, status=status, at=datetime.now(UTC))
    await broker.publish(event, subjects.agent_event(kind.value))


async def ask(access: AgentAccess, agent_id: str, who: Principal) -> AgentAccessReply:
    return await access.ask(agent_id, who, timeout_s=2.0)


async def test_a_live_agents_answer_is_asked_once_for_principals_alike() -> None:
    async with cached() as (access, catalog, _):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A, voice="en-gb")
        first = await ask(access, agent, key(ORG_A))
        # Another key of the org, another user: the same answer, not asked again; so is the same
        # agent spelt in capitals.
        again = await ask(access, agent, key(ORG_A))
        upper = await ask(access, agent.upper(), key(ORG_A))
        assert first.ok and first.voice == "en-gb" and again == first and upper == first
        assert len(catalog.asked) == 1 and access.requests == 1


async def test_no_answer_crosses_tenants() -> None:
    """An answer kept for one org's principals is never given to another org's, to personal
    credentials, or to client tokens: each is asked for, and the catalog refuses where it must."""
    async with cached() as (access, catalog, _):
        agent, other = str(uuid.uuid4()), str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        catalog.agents[other] = Agent(owner_org_id=ORG_B)
        assert (await ask(access, agent, key(ORG_A))).ok
        assert (await ask(access, agent, token(agent, ORG_A))).ok
        asked = len(catalog.asked)

        refused = await ask(access, agent, key(ORG_B))
        assert not refused.ok and refused.error is not None and refused.error.code == "resource.not_found"
        assert not (await ask(access, agent, token(agent, ORG_B))).ok
        assert not (await ask(access, agent, token(other, ORG_A))).ok  # a token naming another agent
        assert not (await ask(access, other, key(ORG_A))).ok  # org B's agent, org A's key
        assert (await ask(access, agent, key())).ok  # a personal key: asked for itself
        assert len(catalog.asked) == asked + 5
        # And refusals are asked again every time.
        assert not (await ask(access, agent, key(ORG_B))).ok
        assert len(catalog.asked) == asked + 6


async def test_unshared_answers_and_refusals_are_never_kept() -> None:
    """A draft's answer depends on the caller's role in its org, which no event announces."""
    async with cached() as (access, catalog, _):
        owner = uuid.uuid4()
        draft = str(uuid.uuid4())
        catalog.agents[draft] = Agent(owner_org_id=None, owner_user_id=owner, status=AgentStatus.DRAFT)
        for _ in range(2):
            assert (await ask(access, draft, key(user_id=owner))).ok
            assert not (await ask(access, draft, key())).ok
            assert not (await ask(access, str(uuid.uuid4()), key())).ok
            assert not (await ask(access, "not-an-agent", key())).ok
        assert len(catalog.asked) == 8


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        (AgentEventKind.DELETED, "deleted"),
        (AgentEventKind.STATUS_CHANGED, "back to draft"),
        (AgentEventKind.UPDATED, "new voice"),
        (AgentEventKind.UPDATED, "moved"),  # an owner change: the catalog has none today
    ],
)
async def test_each_agent_event_drops_that_agents_answers_at_once(kind: AgentEventKind, change: str) -> None:
    async with cached() as (access, catalog, broker):
        agent, bystander = str(uuid.uuid4()), str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A, voice="en-gb")
        catalog.agents[bystander] = Agent(owner_org_id=ORG_A)
        assert (await ask(access, agent, key(ORG_A))).ok
        assert (await ask(access, bystander, key(ORG_A))).ok

        status = AgentStatus.LIVE
        if change == "deleted":
            del catalog.agents[agent]
        elif change == "back to draft":
            catalog.agents[agent].status = status = AgentStatus.DRAFT
        elif change == "new voice":
            catalog.agents[agent].voice = "en-us"
        else:
            catalog.agents[agent].owner_org_id = ORG_B
        await announce(broker, agent, kind, status)

        now = await ask(access, agent, key(ORG_A))
        if change == "new voice":
            assert now.ok and now.voice == "en-us"
        else:
            assert not now.ok
        asked = len(catalog.asked)
        assert (await ask(access, bystander, key(ORG_A))).ok  # another agent's answer is kept
        assert len(catalog.asked) == asked


async def test_an_event_that_does_not_parse_drops_everything() -> None:
    async with cached() as (access, catalog, broker):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        await ask(access, agent, key(ORG_A))
        await broker.publish({"kind": "deleted", "agent_id": "garbled"}, subjects.agent_event("deleted"))
        await ask(access, agent, key(ORG_A))
        assert len(catalog.asked) == 2


async def test_an_answer_in_flight_when_an_event_arrives_is_not_kept() -> None:
    async with cached() as (access, catalog, broker):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        catalog.hold = asyncio.Event()
        asking = asyncio.create_task(ask(access, agent, key(ORG_A)))
        while not catalog.asked:
            await asyncio.sleep(0.001)
        # The catalog read the agent live; it is deleted, and the event overtakes the answer.
        del catalog.agents[agent]
        await announce(broker, agent, AgentEventKind.DELETED, AgentStatus.LIVE)
        catalog.hold.set()
        catalog.hold = None
        assert (await asyncio.wait_for(asking, 2)).ok  # what the catalog said then
        assert not (await ask(access, agent, key(ORG_A))).ok  # not kept: asked again


async def test_a_reconnect_drops_everything() -> None:
    """Events published while the connection was away never arrive."""
    async with cached() as (access, catalog, broker):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        await ask(access, agent, key(ORG_A))
        del catalog.agents[agent]  # its event lost with the connection
        await bus_events(broker).reconnected()
        for _ in range(100):
            if not (await ask(access, agent, key(ORG_A))).ok:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("still admitted after the reconnect")


async def test_answers_expire_and_a_zero_ttl_keeps_none() -> None:
    """A lost event (the catalog died between its commit and the publish) is bounded by the TTL."""
    async with cached(ttl_s=0.05) as (access, catalog, _):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        await ask(access, agent, key(ORG_A))
        del catalog.agents[agent]  # and no event
        assert (await ask(access, agent, key(ORG_A))).ok
        await asyncio.sleep(0.06)
        assert not (await ask(access, agent, key(ORG_A))).ok
    async with cached(ttl_s=0) as (access, catalog, _):
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        await ask(access, agent, key(ORG_A))
        await ask(access, agent, key(ORG_A))
        assert len(catalog.asked) == 2


def test_keys_are_what_the_catalogs_shared_answer_depends_on() -> None:
    """The catalog marks an answer shared when it read only the principal's kind, org and named
    agent (`AgentAccessReply.shared`): the key must hold all three, whatever else differs."""
    fields: dict[str, Any] = {"kind": CredentialKind.CLIENT_TOKEN, "org_id": ORG_A, "agent_id": "a"}
    a = Principal(credential_id=uuid.uuid4(), user_id=uuid.uuid4(), **fields)
    b = Principal(credential_id=uuid.uuid4(), scopes=["x"], **fields)
    assert AgentAccess.key_of(str(uuid.UUID(int=1)), a) == AgentAccess.key_of(str(uuid.UUID(int=1)), b)
    for changed in ({"kind": CredentialKind.API_KEY}, {"org_id": ORG_B}, {"org_id": None}, {"agent_id": "b"}):
        c = Principal(credential_id=uuid.uuid4(), **{**fields, **changed})
        assert AgentAccess.key_of(str(uuid.UUID(int=1)), c) != AgentAccess.key_of(str(uuid.UUID(int=1)), a)
    assert AgentAccess.key_of("not-a-uuid", a) is None


async def test_a_kept_answer_nats_does_not_confirm_is_not_used() -> None:
    """NATS does not answer the PING (away, or too slow): the catalog is asked, as if nothing were
    kept; once it answers again, the kept answer serves."""
    async with cached() as (access, catalog, _):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        assert (await ask(access, agent, key(ORG_A))).ok
        assert (await ask(access, agent, key(ORG_A))).ok and len(catalog.asked) == 1
        flush = cast(AsyncMock, access.broker.connection.flush)  # the in-memory broker's stand-in
        flush.side_effect = ConnectionError("away")
        assert (await ask(access, agent, key(ORG_A))).ok and len(catalog.asked) == 2
        flush.side_effect = None
        assert (await ask(access, agent, key(ORG_A))).ok and len(catalog.asked) == 2


async def test_asks_at_once_share_a_round_trip_begun_after_they_asked() -> None:
    """Ten sockets asking together wait for one PING, not ten; one that asks while a PING is under
    way waits for the next (the one under way may have left before an event it must see)."""
    async with cached() as (access, catalog, _):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        assert (await ask(access, agent, key(ORG_A))).ok
        flush = cast(AsyncMock, access.broker.connection.flush)
        flush.reset_mock()
        gate = asyncio.Event()

        async def held() -> None:
            await gate.wait()

        flush.side_effect = held
        first = [asyncio.create_task(ask(access, agent, key(ORG_A))) for _ in range(10)]
        await asyncio.sleep(0.01)
        late = asyncio.create_task(ask(access, agent, key(ORG_A)))  # while the first PING waits
        await asyncio.sleep(0.01)
        assert flush.await_count == 1 and not late.done()
        gate.set()
        assert all(r.ok for r in await asyncio.gather(*first, late))
        assert flush.await_count == 2 and len(catalog.asked) == 1


async def test_a_kept_answer_waits_for_the_events_nats_server_sent_before(infra: Any) -> None:
    """Over a real nats-server: the catalog publishes an agent's deletion from a connection of its
    own and flushes it before answering the change; a socket that asks at that moment is refused,
    even though this process may not have read the event yet (a kept answer is used only once a
    PING came back and every event read was handled). Without that, the kept answer was returned
    with no wait at all, ahead of the event."""
    catalog = Catalog()
    catalog_side = NatsBroker(infra.nats_url)

    @catalog_side.subscriber(subjects.CATALOG_AGENT_ACCESS)
    @bus_handler(AgentAccessRequest)
    async def answer(req: AgentAccessRequest) -> AgentAccessReply:
        catalog.asked.append(req)
        return catalog.answer(req)

    broker = NatsBroker(infra.nats_url)
    access = AgentAccess(broker, ttl_s=30.0)
    await catalog_side.start()
    await broker.start()
    try:
        for _ in range(20):  # each round a new agent, kept, then deleted and asked for at once
            agent = str(uuid.uuid4())
            catalog.agents[agent] = Agent(owner_org_id=ORG_A)
            assert (await ask(access, agent, key(ORG_A))).ok
            assert (await ask(access, agent, key(ORG_A))).ok  # kept
            asked = len(catalog.asked)
            del catalog.agents[agent]
            await announce(catalog_side, agent, AgentEventKind.DELETED, AgentStatus.LIVE)
            await flushed(catalog_side.connection)  # as the catalog does before it answers
            refused = await ask(access, agent, key(ORG_A))
            assert not refused.ok, "a deleted agent's kept answer was used"
            assert len(catalog.asked) == asked + 1
    finally:
        await broker.stop()
        await catalog_side.stop()


async def test_a_catch_up_cancelled_leaves_nobody_waiting() -> None:
    """The gateway stopping mid-round: the sockets waiting are told "not confirmed" (the catalog
    is asked), not left waiting for a round trip that will never end."""
    async with cached() as (access, catalog, _):
        agent = str(uuid.uuid4())
        catalog.agents[agent] = Agent(owner_org_id=ORG_A)
        assert (await ask(access, agent, key(ORG_A))).ok
        flush = cast(AsyncMock, access.broker.connection.flush)
        never = asyncio.Event()

        async def held() -> None:
            await never.wait()

        flush.side_effect = held
        waiting = asyncio.create_task(ask(access, agent, key(ORG_A)))
        await asyncio.sleep(0.01)
        assert access._catching_up is not None
        access._catching_up.cancel()
        assert (await asyncio.wait_for(waiting, 1)).ok and len(catalog.asked) == 2
        flush.side_effect = None
        assert (await ask(access, agent, key(ORG_A))).ok and len(catalog.asked) == 2  # kept again
