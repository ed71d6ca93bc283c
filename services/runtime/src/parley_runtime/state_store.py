"""What the session stores of both engines share: one pydantic state per session, as JSON in Redis
under a TTL, bounded in size, written through Redis outages.

`sessions/store.py` (blueprint sessions: owner fence and lease) and `octavus/store.py` (Octavus
sessions: tombstone and per-session lock) add what their engine needs on top. Writes wait an
outage out for up to `outage_timeout_s` (they are all safe to repeat); whether a read waits too is
each engine's choice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel
from redis.asyncio import Redis

from parley_common.outages import until_available

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


@dataclass
class RedisStateStore(Generic[S]):
    """A subclass (a dataclass too, `kw_only`) names its state model, its key layout and its log
    field, and adds its own settings."""

    state_model: ClassVar[type[BaseModel]]
    key_format: ClassVar[str]  # with `{id}` (the session's) and `{part}` ("state", "owner", ...)
    log_id: ClassVar[str]  # the log field naming the session in outage warnings

    redis: Redis
    _: KW_ONLY
    ttl_s: int
    max_bytes: int
    outage_timeout_s: float = 30.0

    def key(self, session_id: object, part: str) -> str:
        return self.key_format.format(id=session_id, part=part)

    async def _retried(self, call: Callable[[], Awaitable[T]], what: str, session_id: object) -> T:
        return await until_available(
            call, deadline_s=self.outage_timeout_s, what=what, **{self.log_id: str(session_id)}
        )

    def decode(self, raw: Any) -> S | None:
        """The state read from Redis (None: there is none)."""
        return None if raw is None else cast(S, self.state_model.model_validate_json(raw))

    def encode(self, state: S) -> bytes:
        """JSON of the state within `max_bytes`: `shrink` makes room while it can; a state still too
        large is refused with `too_large`."""
        body = state.model_dump_json().encode()
        while len(body) > self.max_bytes and self.shrink(state):
            body = state.model_dump_json().encode()
        if len(body) > self.max_bytes:
            raise self.too_large(len(body))
        return body

    def shrink(self, state: S) -> bool:
        """Drop what the engine can spare from a state over the limit; False: nothing left to drop."""
        return False

    def too_large(self, size: int) -> Exception:
        """The error a state over the limit is refused with."""
        raise NotImplementedError
