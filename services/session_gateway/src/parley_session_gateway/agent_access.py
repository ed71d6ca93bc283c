"""`catalog.agent.access` as the gateway asks it, with the answers the catalog shares reused.

Every socket opened asks the catalog whether its principal may talk to its agent. For a live
agent the catalog's answer reads only the agent's row and the principal's kind, org and named
agent (`AgentAccessReply.shared`), so it holds for every principal alike in those three until the
agent changes. Those answers are kept here, per agent and (kind, org, named agent), for
`ttl_s` (30 s by default, as verified credentials are in `AuthClient`), and dropped the way
`AuthClient` drops revoked credentials:

- every `catalog.events.agent.*` event (an update, a status change, a deletion, a tool change:
  the catalog publishes one after each commit and flushes it to NATS before answering the change,
  agents/events.py) drops that agent's answers, so the next socket asks the catalog again; an
  event that does not parse drops them all. A kept answer is used only once this process has
  caught up with nats-server (`_caught_up`): a PING answered (the server sends a connection's
  messages in order, so every event it sent before is in), and every event received handled. A
  client told "deleted" that opens a socket at once is refused even when the event is still on
  its way (a loaded nats-server, a gateway busy elsewhere). One round trip serves every socket
  that asked while the one before it was under way;
- an answer in flight when an event arrives is returned but not kept (it may predate the change);
- events published while this process was cut from NATS never reach it, so everything is dropped
  when the connection comes back;
- an event lost otherwise (the catalog died between its commit and the publish) is bounded by the
  TTL, as a lost revocation is in `AuthClient`.

Nothing else is kept: refusals, and answers the catalog does not share (a draft, whose check asks
auth about the caller's role in its org, which no event announces), are asked for every time. The
credential itself is verified before (`AuthClient`, revocations pushed), so a revoked key or
token never reaches this cache.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from pydantic import ValidationError

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.bus import bus_events
from parley_common.catalog_contract import AgentAccessReply, AgentEvent
from parley_common.telemetry import untraced
from parley_session_gateway import bus

log = structlog.get_logger(__name__)

MAX_CACHED = 20_000

# The agent (as a canonical UUID) and what of the principal a shared answer depends on.
Key = tuple[str, CredentialKind, UUID | None, str | None]


def _canonical(agent_id: str) -> str | None:
    try:
        return str(UUID(agent_id))
    except ValueError:
        return None


class AgentAccess:
    def __init__(self, broker: NatsBroker, *, ttl_s: float, catch_up_timeout_s: float = 1.0) -> None:
        self.broker = broker
        self.ttl_s = ttl_s
        self._cache: dict[Key, tuple[float, AgentAccessReply]] = {}  # → (valid until, monotonic)
        # Bumped by every event and reconnect: an answer asked for before it is not kept.
        self._generation = 0
        self.requests = 0  # questions that crossed the bus (for tests and benchmarks)
        self.catch_up_timeout_s = catch_up_timeout_s
        # No queue group: every gateway hears every agent change.
        self._events = broker.subscriber(f"{subjects.CATALOG_AGENT_EVENTS}.*")
        self._events(self._on_event)
        bus_events(broker).on_reconnect(self._on_reconnect)
        self._wanted: asyncio.Future[bool] | None = None  # a catch-up asked for, not begun
        self._catching_up: asyncio.Task[None] | None = None

    def forget(self, agent_id: str | None = None) -> None:
        """Drop the answers about `agent_id` (all of them without one); answers now in flight are
        not kept either."""
        self._generation += 1
        if agent_id is None:
            self._cache.clear()
            return
        for key in [key for key in self._cache if key[0] == agent_id]:
            del self._cache[key]

    async def _caught_up(self) -> bool:
        """Whether every agent event nats-server sent this process before this call has been
        handled. Callers share a round trip begun after they asked: one under way when a caller
        asks may have left before an event it must see, so that caller waits for the next."""
        wanted = self._wanted
        if wanted is None:
            wanted = self._wanted = asyncio.get_running_loop().create_future()
            if self._catching_up is None:
                with untraced():  # a task made here would keep this socket's span
                    self._catching_up = asyncio.create_task(self._catch_up())
        return await asyncio.shield(wanted)

    async def _catch_up(self) -> None:
        wanted: asyncio.Future[bool] | None = None
        try:
            while (wanted := self._wanted) is not None:
                self._wanted = None
                wanted.set_result(await self._round_trip())
        finally:
            self._catching_up = None
            # Cancelled mid-round (the gateway stopping): nobody waits for an answer forever.
            for left in (wanted, self._wanted):
                if left is not None and not left.done():
                    left.set_result(False)
            self._wanted = None

    async def _round_trip(self) -> bool:
        """A PING to nats-server answered (every message it sent before is read, it writes a
        connection's messages in order), then the event subscription's messages read so far
        handled (nats-py counts each done after its callback). False when NATS does not answer."""
        try:
            async with asyncio.timeout(self.catch_up_timeout_s):
                await self.broker.connection.flush()
                subscription = self._events.subscription  # nats-py's, made when the broker started
                if subscription is not None:
                    await subscription._pending_queue.join()
        except Exception as exc:  # away, slow, closing: the catalog is asked, as with no answer kept
            log.info("gateway.agent_events_unconfirmed", error=type(exc).__name__)
            return False
        return True

    async def _on_reconnect(self) -> None:
        # Agent events published while the connection was away never reached this process.
        self.forget()

    async def _on_event(self, body: Any) -> None:
        try:
            if isinstance(body, bytes | str):
                event = AgentEvent.model_validate_json(body)
            else:
                event = AgentEvent.model_validate(body)
        except ValidationError as exc:
            # Whatever changed, forgetting everything is never wrong.
            self.forget()
            log.warning("gateway.bad_agent_event", error=str(exc.errors(include_input=False)[:1]))
            return
        self.forget(str(event.agent_id))

    @staticmethod
    def key_of(agent_id: str, principal: Principal) -> Key | None:
        """Where a shared answer is kept: the agent, and what of the principal the catalog read to
        decide it (its kind, org and named agent; not the credential, user or scopes). None: an
        agent id the catalog will refuse anyway."""
        canonical = _canonical(agent_id)
        if canonical is None:
            return None
        return (canonical, principal.kind, principal.org_id, principal.agent_id)

    async def ask(self, agent_id: str, principal: Principal, *, timeout_s: float) -> AgentAccessReply:
        """The catalog's answer: may `principal` talk to `agent_id`, and the agent's details."""
        key = self.key_of(agent_id, principal)
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None and hit[0] <= time.monotonic():
                del self._cache[key]
                hit = None
            if hit is not None and await self._caught_up():
                hit = self._cache.get(key)  # an event handled meanwhile dropped it
                if hit is not None:
                    return hit[1]
        generation = self._generation
        self.requests += 1
        reply = await bus.agent_access(self.broker, agent_id, principal, timeout_s=timeout_s)
        if (
            key is not None
            and reply.ok
            and reply.shared
            and self.ttl_s > 0
            and generation == self._generation
            and _canonical(reply.agent_id or "") == key[0]
        ):
            while len(self._cache) >= MAX_CACHED:  # the oldest entries go first
                del self._cache[next(iter(self._cache))]
            self._cache[key] = (time.monotonic() + self.ttl_s, reply)
        return reply
