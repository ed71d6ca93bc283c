"""Session state in Redis, bounded in size, with a TTL, written only by the session's owner.

Ownership is fenced: claiming a session writes the claimant's token into `…:owner`, and every
state write checks it in the same Lua script. A worker that lost its session (JetStream gave it
to another worker because its heartbeats stopped) therefore cannot overwrite the new owner's
state; its next write fails with `OwnershipLost` and it stops running the session.

Next to the fence, the owner holds a short lease (`…:lease`, renewed every claim heartbeat, gone
within `ack_wait` of the owner's death). JetStream also redelivers a start message when it merely
missed the owner's heartbeats (a broker restart longer than `ack_wait`); a worker offered a
session whose lease another worker still holds leaves it to that owner (see worker.py).

Redis may be away for a moment (a restart): every read and write here is retried while it fails
with a connection error, for up to `outage_timeout_s`, so a turn that commits during the outage
commits once Redis is back instead of crashing its session. They are all safe to repeat.

The history the LLM sees is kept apart from the rest of the state, as a Redis list of its items'
JSON (`…:history`), next to how many items were ever appended (`…:history_seq`): a save sends the
state without its history and only the items the turn appended, and trims what it dropped, so a
turn's write stays the size of the turn, not of the conversation (a full history of 2 KB messages
was a 200 KB `SET` every turn). The count makes a save safe to repeat: one that Redis already
applied (its reply lost to a broken connection) pushes nothing again. A save that does not build
on what Redis holds (a state from before the split, a list gone) writes the whole history instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import structlog
from redis.asyncio import Redis

from parley_common.redis_client import LineScript, RedisLine
from parley_runtime.sessions.state import HistoryItem, SessionState
from parley_runtime.settings import RuntimeSettings
from parley_runtime.state_store import RedisStateStore

# KEYS: owner, lease, claims, state, history; ARGV: token, ttl in s, lease in ms. Takes the
# session over and returns how many times it has been claimed, its committed state (nil: none) and
# its history's items, read after the fence moved to us: one round trip for what every claim needs.
_CLAIM = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
local claims = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return {claims, redis.call('GET', KEYS[4]), redis.call('LRANGE', KEYS[5], 0, -1)}
"""

# KEYS: owner, state, history, history_seq. ARGV: token, state (without history), ttl in s, the
# history_seq the save builds on, the new history_seq, how many items the history keeps, whole
# (1: the items are the whole history), then the items appended since (or all of them).
# Returns 1, 0 (not the owner: nothing written) or -1 (Redis does not hold what the save builds
# on: nothing written, send the whole history).
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local seq, keep, len = tonumber(ARGV[5]), tonumber(ARGV[6]), 0
local function push()  -- the items, a thousand a command (Lua's unpack has a limit)
  for i = 8, #ARGV, 1000 do len = redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
end
if ARGV[7] == '1' then
  redis.call('DEL', KEYS[3])
  push()
else
  local have = tonumber(redis.call('GET', KEYS[4]) or '0')
  len = redis.call('LLEN', KEYS[3])
  if have ~= seq then
    if have ~= tonumber(ARGV[4]) or len + #ARGV - 7 < keep then return -1 end
    push()
  elseif len < keep then  -- (equal: this save was applied already, its reply lost)
    return -1
  end
end
if keep == 0 then
  redis.call('DEL', KEYS[3])
else
  if len > keep then redis.call('LTRIM', KEYS[3], -keep, -1) end
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
redis.call('SET', KEYS[4], seq, 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: lease keys; ARGV: token, ttl in ms. Renews the leases this worker holds (or that expired
# while Redis was away and nobody took), never one another worker holds now.
_RENEW = """
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == false or holder == ARGV[1] then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


log = structlog.get_logger(__name__)


def _json(item: HistoryItem) -> bytes:
    return item.model_dump_json().encode()


@dataclass(frozen=True)
class Claimed:
    claims: int  # how many times the session has been claimed (1: the first owner)
    state: SessionState | None  # its committed state (None: nothing committed yet)


class OwnershipLost(Exception):
    """Another worker owns this session now."""


class StateTooLarge(Exception):
    pass


@dataclass(kw_only=True)
class StateStore(RedisStateStore[SessionState]):
    state_model = SessionState
    key_format = "parley:rt:session:{id}:{part}"
    log_id = "conversation_id"

    closed_ttl_s: int
    lease_ms: int = 4500

    def __post_init__(self) -> None:
        # A turn's commit, the one Redis command of every turn, and a session's claim, the one of
        # every opening, go over a connection of their own (`RedisLine`: no pool checkout and
        # release, no retry wrapper, no reader per command); everything else goes through the
        # pool. Both are retried through outages here (`_retried`), as through the pool.
        self._line = RedisLine(self.redis.connection_pool)
        self._claim = LineScript(self._line, _CLAIM)
        self._save = LineScript(self._line, _SAVE)
        self._renew: Any = self.redis.register_script(_RENEW)
        self._release: Any = self.redis.register_script(_RELEASE)

    @classmethod
    def from_settings(cls, redis: Redis, settings: RuntimeSettings) -> StateStore:
        return cls(
            redis,
            ttl_s=settings.runtime_state_ttl_s,
            closed_ttl_s=settings.runtime_closed_state_ttl_s,
            max_bytes=settings.runtime_max_state_bytes,
            lease_ms=settings.runtime_claim_lease_ms,
            outage_timeout_s=settings.runtime_state_outage_s,
        )

    async def claim(self, conversation_id: UUID, token: str) -> Claimed:
        """Take the session over, and read its committed state, in one round trip (one script).
        Unconditional: JetStream delivering the start message to us is what makes us the owner."""
        parts = ("owner", "lease", "claims", "state", "history")
        keys = [self.key(conversation_id, part) for part in parts]
        claims, raw, items = await self._retried(
            lambda: self._claim(keys=keys, args=[token, self.ttl_s, self.lease_ms]),
            "session claim",
            conversation_id,
        )
        return Claimed(int(claims), self._read_back(raw, items))

    async def load(self, conversation_id: UUID) -> SessionState | None:
        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.key(conversation_id, "state"))
                pipe.lrange(self.key(conversation_id, "history"), 0, -1)
                return await pipe.execute()

        raw, items = await self._retried(read, "session load", conversation_id)
        return self._read_back(raw, items)

    def _read_back(self, raw: Any, items: list[bytes]) -> SessionState | None:
        state = self.decode(raw)
        return None if state is None else state.read_back(items)

    async def save(self, state: SessionState, token: str) -> None:
        """Write the state (without its history) and the history items the turn appended, trim
        what it dropped; the whole history when Redis does not hold what the save builds on."""
        conv = state.conversation_id
        prefix = self.key(conv, "")
        keys = [prefix + part for part in ("owner", "state", "history", "history_seq")]
        body, history_bytes, saved_seq, appended = self._encode(state)
        ttl = self.closed_ttl_s if state.phase == "closed" else self.ttl_s
        head: list[bytes | str | int] = [token, body, ttl, saved_seq, state.history_seq, len(state.history)]

        def write(whole: bool) -> Awaitable[Any]:
            if whole or appended is None:
                return self._save(keys=keys, args=[*head, 1, *(_json(item) for item in state.history)])
            return self._save(keys=keys, args=[*head, 0, *appended])

        done = await self._retried(lambda: write(False), "session save", conv)
        if done == -1:
            log.warning("session.history_saved_whole", conversation_id=str(conv))
            done = await self._retried(lambda: write(True), "session save", conv)
        if not done:
            raise OwnershipLost(str(conv))
        state.saved(history_bytes)

    def _encode(self, state: SessionState) -> tuple[bytes, int, int, list[bytes] | None]:
        """The state's JSON without its history, at least the size of its history's JSON (the two
        within `max_bytes` together), the `history_seq` the save builds on, and the JSON of the
        history items to append (None: the whole history is to be written). The history as saved
        plus what the turn appended bounds its size (what the turn dropped only makes it smaller);
        over the limit, it is measured item by item, and the oldest history goes first (`shrink`);
        a state still too large is refused."""
        body = state.encoded()
        saved_seq, saved_bytes, appended = state.history_to_save()
        if appended is not None:
            json = [_json(item) for item in appended]
            history = saved_bytes + sum(len(data) for data in json)
            if len(body) + history <= self.max_bytes:
                return body, history, saved_seq, json
        history = state.history_bytes()
        while len(body) + history > self.max_bytes and self.shrink(state):
            history = state.history_bytes()
        if len(body) + history > self.max_bytes:
            raise self.too_large(len(body) + history)
        appended = state.history_to_save()[2]  # what is left of it after `shrink`
        return body, history, saved_seq, None if appended is None else [_json(item) for item in appended]

    async def aclose(self) -> None:
        """Close the save's own connection (the pool is its owner's to close)."""
        await self._line.aclose()

    def shrink(self, state: SessionState) -> bool:
        """The oldest history goes first (a quarter at a time)."""
        if not state.history:
            return False
        del state.history[: max(1, len(state.history) // 4)]
        return True

    def too_large(self, size: int) -> Exception:
        return StateTooLarge(f"session state is {size} bytes; the limit is {self.max_bytes}")

    async def owner(self, conversation_id: UUID) -> str | None:
        raw = await self.redis.get(self.key(conversation_id, "owner"))
        return None if raw is None else cast(bytes, raw).decode()

    # ----------------------------------------------------------------------------- leases

    async def lease_holder(self, conversation_id: UUID) -> str | None:
        """Who holds the session's lease (None: nobody, its owner is gone). Not retried."""
        raw = await self.redis.get(self.lease_key(conversation_id))
        return None if raw is None else cast(bytes, raw).decode()

    def lease_key(self, conversation_id: UUID) -> str:
        """The key of the session's lease: a worker makes it once per session it runs, not at
        every heartbeat (a UUID's text and the key's format, ~1.3 µs each time)."""
        return self.key(conversation_id, "lease")

    async def renew_leases(self, lease_keys: Sequence[str], token: str) -> None:
        """One round trip for every session this worker runs (called every claim heartbeat), by
        their `lease_key`s."""
        if lease_keys:
            await self._renew(keys=list(lease_keys), args=[token, self.lease_ms])

    async def release(self, conversation_id: UUID, token: str) -> None:
        """Give the lease up (the session is closed or handed over): the next worker offered the
        session takes it at once."""
        await self._release(keys=[self.lease_key(conversation_id)], args=[token])
