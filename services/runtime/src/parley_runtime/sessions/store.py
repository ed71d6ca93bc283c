"""Session state in Redis, bounded in size, with a TTL, written only by the session's owner.

Ownership is fenced: claiming a session writes the claimant's token into `…:owner`, and every
state write checks it in the same Lua script. A worker that lost its session (JetStream gave it
to another worker because its heartbeats stopped) therefore cannot overwrite the new owner's
state; its next write fails with `OwnershipLost` and it stops running the session.
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from redis.asyncio import Redis

from parley_runtime.sessions.state import SessionState

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class OwnershipLost(Exception):
    """Another worker owns this session now."""


class StateTooLarge(Exception):
    pass


def _key(conversation_id: UUID, part: str) -> str:
    return f"parley:rt:session:{conversation_id}:{part}"


class StateStore:
    def __init__(self, redis: Redis, *, ttl_s: int, closed_ttl_s: int, max_bytes: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.closed_ttl_s = closed_ttl_s
        self.max_bytes = max_bytes
        self._save: Any = redis.register_script(_SAVE)

    async def claim(self, conversation_id: UUID, token: str) -> None:
        # Unconditional: JetStream delivering the start message to us is what makes us the owner.
        await self.redis.set(_key(conversation_id, "owner"), token, ex=self.ttl_s)

    async def load(self, conversation_id: UUID) -> SessionState | None:
        raw = await self.redis.get(_key(conversation_id, "state"))
        if raw is None:
            return None
        return SessionState.model_validate_json(raw)

    async def save(self, state: SessionState, token: str) -> None:
        body = self.encode(state)
        ttl = self.closed_ttl_s if state.phase == "closed" else self.ttl_s
        keys = [_key(state.conversation_id, "owner"), _key(state.conversation_id, "state")]
        ok = await self._save(keys=keys, args=[token, body, ttl])
        if not ok:
            raise OwnershipLost(str(state.conversation_id))

    def encode(self, state: SessionState) -> bytes:
        """JSON of the state within `max_bytes`: the oldest history goes first; a state still too
        large (huge variables) is refused."""
        body = state.model_dump_json().encode()
        while len(body) > self.max_bytes and state.history:
            drop = max(1, len(state.history) // 4)
            del state.history[:drop]
            body = state.model_dump_json().encode()
        if len(body) > self.max_bytes:
            raise StateTooLarge(f"session state is {len(body)} bytes; the limit is {self.max_bytes}")
        return body

    async def owner(self, conversation_id: UUID) -> str | None:
        raw = await self.redis.get(_key(conversation_id, "owner"))
        return None if raw is None else cast(bytes, raw).decode()
