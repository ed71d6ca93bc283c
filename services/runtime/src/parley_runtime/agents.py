"""Agent definitions as the runtime executes them: `catalog.agent.resolve`, cached per worker.

A snapshot is cached under its agent id and version. Any `catalog.events.agent.*` event for the
agent (subscribed in bus.py) drops it (an update, a status change, a deletion), and so does the
TTL, in case an event was lost. A running session keeps the snapshot it started with; the next
session (or a session resumed on another worker) gets the current one. Concurrent sessions of one
agent share a single resolve request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from faststream.nats import NatsBroker
from pydantic import ValidationError

from parley_common.catalog_client import resolve_agent
from parley_common.catalog_contract import AgentEvent, AgentSnapshot

log = structlog.get_logger(__name__)


class AgentCache:
    def __init__(self, broker: NatsBroker, *, ttl_s: float, timeout_s: float) -> None:
        self.broker = broker
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._entries: dict[str, tuple[float, AgentSnapshot]] = {}
        self._inflight: dict[str, asyncio.Future[AgentSnapshot]] = {}

    async def on_event(self, body: Any) -> None:
        try:
            event = AgentEvent.model_validate(body)
        except ValidationError:
            # Unparseable: forgetting everything is always safe.
            self._entries.clear()
            return
        self.forget(str(event.agent_id))
        log.info("agent.cache_dropped", agent_id=str(event.agent_id), version=event.version, kind=event.kind)

    def forget(self, agent_id: str) -> None:
        # Any event means the agent changed (or went away): the next session resolves it again.
        for key, (_, snapshot) in list(self._entries.items()):
            if key == agent_id or str(snapshot.agent_id) == agent_id:
                del self._entries[key]

    async def get(self, agent_id: str) -> AgentSnapshot:
        entry = self._entries.get(agent_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        pending = self._inflight.get(agent_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[AgentSnapshot] = asyncio.get_running_loop().create_future()
        self._inflight[agent_id] = future
        try:
            snapshot = await self._resolve(agent_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(snapshot)
            self._entries[agent_id] = (time.monotonic() + self.ttl_s, snapshot)
            return snapshot
        finally:
            self._inflight.pop(agent_id, None)

    async def _resolve(self, agent_id: str) -> AgentSnapshot:
        return await resolve_agent(self.broker, agent_id, timeout_s=self.timeout_s)
