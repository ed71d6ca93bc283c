"""Agent secrets for cloud speech engines, read through `catalog.agent.resolve` and cached.

Only engines that need a key ask (the offline ones never do). A snapshot is kept for
`PARLEY_SPEECH_AGENT_CACHE_TTL_S` and dropped on any `catalog.events.agent.*` event for the agent
(subscribed in bus.py),
so a rotated key is used by the next voice session.
"""

from __future__ import annotations

import time
from typing import Any

from faststream.nats import NatsBroker

from parley_common.catalog_client import resolve_agent
from parley_common.catalog_contract import AgentEvent, AgentSnapshot


class AgentSecrets:
    def __init__(self, broker: NatsBroker, *, ttl_s: float, timeout_s: float) -> None:
        self.broker, self.ttl_s, self.timeout_s = broker, ttl_s, timeout_s
        self._entries: dict[str, tuple[float, AgentSnapshot]] = {}

    def forget(self, body: Any) -> None:
        """A `catalog.events.agent.*` event (bus.py): that agent's snapshot is stale."""
        try:
            self._entries.pop(str(AgentEvent.model_validate(body).agent_id), None)
        except ValueError:
            self._entries.clear()

    async def secret(self, agent_id: str, name: str) -> str | None:
        snapshot = await self._snapshot(agent_id)
        value = snapshot.secrets.get(name)
        return value or None

    async def _snapshot(self, agent_id: str) -> AgentSnapshot:
        entry = self._entries.get(agent_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        snapshot = await resolve_agent(self.broker, agent_id, timeout_s=self.timeout_s)
        self._entries[agent_id] = (time.monotonic() + self.ttl_s, snapshot)
        return snapshot
