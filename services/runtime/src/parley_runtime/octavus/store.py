"""Octavus sessions in Redis: the state with a sliding TTL (the session expiry), a tombstone that
outlives it (so an expired session reads as expired, and can be restored), and a per-session
lock so one execution runs at a time, whichever worker takes the trigger.

Reads fail fast while Redis is away (the request is answered 503 `service.unavailable`); the save
at the end of an execution waits an outage out for up to `outage_timeout_s`, so a round that ran
while Redis restarted is kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import LockError

from parley_common.errors import Codes, ParleyError
from parley_common.outages import OUTAGE_ERRORS
from parley_common.tasks import cancel_and_wait
from parley_runtime.octavus.state import Session, Tombstone
from parley_runtime.settings import RuntimeSettings
from parley_runtime.state_store import RedisStateStore


@dataclass(kw_only=True)
class SessionStore(RedisStateStore[Session]):
    state_model = Session
    key_format = "parley:octavus:{part}:{id}"
    log_id = "session_id"

    tombstone_ttl_s: int
    lock_ttl_s: float = 15.0

    @classmethod
    def from_settings(cls, redis: Redis, settings: RuntimeSettings) -> SessionStore:
        return cls(
            redis,
            ttl_s=settings.runtime_octavus_session_ttl_s,
            tombstone_ttl_s=settings.runtime_octavus_expired_ttl_s,
            max_bytes=settings.runtime_octavus_max_state_bytes,
            outage_timeout_s=settings.runtime_state_outage_s,
        )

    async def load(self, session_id: str) -> Session | None:
        return self.decode(await self.redis.get(self.key(session_id, "state")))

    async def tombstone(self, session_id: str) -> Tombstone | None:
        raw = await self.redis.get(self.key(session_id, "tomb"))
        return None if raw is None else Tombstone.model_validate_json(raw)

    async def save(self, session: Session) -> None:
        """Write the state and push both expiries forward (expiry counts from the last activity)."""
        data = self.encode(session)
        tomb = Tombstone(
            agent_id=session.agent_id,
            created_at=session.created_at,
            owner_user_id=session.owner_user_id,
            owner_org_id=session.owner_org_id,
        )

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.key(session.id, "state"), data, ex=self.ttl_s)
                tomb_ttl = self.ttl_s + self.tombstone_ttl_s
                pipe.set(self.key(session.id, "tomb"), tomb.model_dump_json(), ex=tomb_ttl)
                await pipe.execute()

        await self._retried(write, "octavus session save", session.id)

    def too_large(self, size: int) -> Exception:
        return ParleyError(Codes.OCTAVUS_SESSION_TOO_LARGE, params={"limit": self.max_bytes})

    async def create(self, session: Session) -> bool:
        """Store a new session; False when the id is taken (live or expired)."""
        if not await self.redis.set(self.key(session.id, "tomb"), "{}", nx=True, ex=60):
            return False
        await self.save(session)
        return True

    @contextlib.asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session's lock (409 `octavus.session_busy` when another execution has it),
        extended in the background so a long execution keeps it and a dead worker's expires."""
        lock = self.redis.lock(self.key(session_id, "lock"), timeout=self.lock_ttl_s, blocking=False)
        if not await lock.acquire():
            raise ParleyError(Codes.OCTAVUS_SESSION_BUSY)

        async def keep() -> None:
            while True:
                await asyncio.sleep(self.lock_ttl_s / 3)
                try:
                    await lock.reacquire()
                except LockError:  # it expired (Redis was away for long): nothing left to keep
                    return
                except OUTAGE_ERRORS:  # Redis is away: again at the next tick
                    continue

        keeper = asyncio.create_task(keep())
        try:
            yield
        finally:
            await cancel_and_wait(keeper)
            with contextlib.suppress(LockError, *OUTAGE_ERRORS):  # it expires by itself anyway
                await lock.release()
