"""A test run's progress in Redis, so a run whose worker died goes on where it was.

The checkpoint is the run's state machine (`phase`) and everything it has decided so far: the
conversation it holds, the transcript, the attacker message about to be sent, the remarks. It is
written before anything is published or sent, so a worker resuming the run repeats only
idempotent steps (republications under the same ids) and never asks an LLM again for something
already decided. Writes are fenced by an owner token, as for sessions (sessions/store.py).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from parley_common.agent_test_contract import Remark, RunStatus
from parley_common.errors import ErrorEnvelope
from parley_runtime.agent_tests.prompts import Line

# starting: the session is being opened; agent: waiting for the agent's turn; attacker: the
# simulated user speaks next; closing: the conversation is over, the session is to be ended;
# auditing: the auditor judges the transcript; finished: the verdict is known.
Phase = Literal["starting", "agent", "attacker", "closing", "auditing", "finished"]

_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Checkpoint(BaseModel):
    run_id: UUID
    attempt: int = Field(ge=1)
    phase: Phase = "starting"
    conversation_id: UUID
    step: int = 0  # progress events published so far
    out_index: int = 0  # last session output index consumed (the end of the last agent turn)
    transcript: list[Line] = Field(default_factory=list)
    attacker_turns: int = 0
    pending: Line | None = None  # the simulated user's next message, decided but maybe not sent
    engine: str | None = None
    status: RunStatus | None = None
    remarks: list[Remark] = Field(default_factory=list)
    error: ErrorEnvelope | None = None


class OwnershipLost(Exception):
    """Another worker runs this test now."""


def _key(run_id: UUID, part: str) -> str:
    return f"parley:rt:agent-test:{run_id}:{part}"


class CheckpointStore:
    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._save: Any = redis.register_script(_SAVE)

    async def claim(self, run_id: UUID, token: str) -> None:
        # JetStream delivering the job to this worker is what makes it the owner.
        await self.redis.set(_key(run_id, "owner"), token, ex=self.ttl_s)

    async def load(self, run_id: UUID) -> Checkpoint | None:
        raw = await self.redis.get(_key(run_id, "state"))
        return None if raw is None else Checkpoint.model_validate_json(raw)

    async def save(self, checkpoint: Checkpoint, token: str) -> None:
        keys = [_key(checkpoint.run_id, "owner"), _key(checkpoint.run_id, "state")]
        ok = await self._save(keys=keys, args=[token, checkpoint.model_dump_json(), self.ttl_s])
        if not ok:
            raise OwnershipLost(str(checkpoint.run_id))
