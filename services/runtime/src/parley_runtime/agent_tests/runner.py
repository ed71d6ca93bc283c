"""One test run: a conversation between the simulated user and the agent, then the audit.

The run is a state machine over its checkpoint (checkpoint.py):

    starting → agent ⇄ attacker → closing → auditing → finished

- starting: a session is opened on the bus for the agent, as the gateway opens one for a user;
- agent: the agent's turn is read to its end and becomes a transcript message;
- attacker: the simulated user (an LLM with the test's persona, goal and attack lines) decides its
  next message, which is checkpointed, then sent as session input;
- closing: the simulated user is done (it said END, or its turns are used up) or the agent closed
  the session; the session is ended;
- auditing: the auditor (an LLM judge with the criteria) writes one remark per criterion;
- finished: `passed` when no remark fails, else `failed`; `error` when the run could not be held.

Every step is checkpointed before its effects are published, and events are published under
deterministic ids, so a run resumed by another worker after a crash publishes nothing twice that
the catalog would store twice, and never asks an LLM again for what was already decided. A run
found without a checkpoint on a redelivery starts over as a new attempt (a new conversation); the
catalog then drops what the older attempt had sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import structlog

from parley_common.agent_test_contract import (
    AgentTestEvent,
    AgentTestJob,
    MessageRole,
    RunFinished,
    RunMessage,
    RunProgress,
    RunStatus,
    Verdict,
    event_id,
)
from parley_common.catalog_contract import AgentSnapshot
from parley_common.errors import Codes, ErrorCode, ParleyError, envelope
from parley_common.session_contract import SessionStart
from parley_runtime.agent_tests.checkpoint import Checkpoint
from parley_runtime.agent_tests.conversation import AgentTurn, TurnTimeout
from parley_runtime.agent_tests.prompts import (
    AuditUnreadable,
    Line,
    agent_instructions,
    attacker_messages,
    attacker_said,
    auditor_messages,
    read_remarks,
)
from parley_runtime.llm import ChatMessage, ChatRequest, LLMRegistry, LLMSelection, collect
from parley_runtime.llm.engines import BUILTIN

log = structlog.get_logger(__name__)
CHANNEL = "agent-test"  # the channel of the conversations test runs hold


class Conversation(Protocol):
    async def attach(self) -> None: ...
    async def start(self, start: SessionStart) -> None: ...
    async def next_turn(self, timeout_s: float) -> AgentTurn: ...
    async def say(self, text: str, msg_id: str) -> None: ...
    async def end(self, msg_id: str) -> None: ...
    async def sent(self, msg_id: str) -> bool: ...
    async def detach(self) -> None: ...


class Checkpoints(Protocol):
    async def claim(self, run_id: UUID, token: str) -> None: ...
    async def load(self, run_id: UUID) -> Checkpoint | None: ...
    async def save(self, checkpoint: Checkpoint, token: str) -> None: ...


class Agents(Protocol):
    async def get(self, agent_id: str) -> AgentSnapshot: ...


@dataclass
class RunnerDeps:
    checkpoints: Checkpoints
    agents: Agents
    registry: LLMRegistry
    # Opens the session-bus side of a conversation: (conversation id, last output index consumed).
    conversation: Callable[[UUID, int], Conversation]
    publish: Callable[[AgentTestEvent], Awaitable[None]]
    token: str  # this worker's identity in the checkpoint fence
    default_model: str = "builtin"
    turn_timeout_s: float = 60.0
    max_attempts: int = 5  # deliveries of one job before the run ends in error


def conversation_id(run_id: UUID, attempt: int) -> UUID:
    return uuid.uuid5(run_id, f"conversation:{attempt}")


class RunFailed(Exception):
    def __init__(self, code: ErrorCode, **params: Any) -> None:
        super().__init__(code.code)
        self.code, self.params = code, params


class TestRunner:
    __test__ = False  # not a pytest class

    def __init__(self, deps: RunnerDeps, job: AgentTestJob, deliveries: int) -> None:
        self.deps = deps
        self.job = job
        self.deliveries = deliveries
        self.log = log.bind(run_id=str(job.run_id))
        self.cp: Checkpoint | None = None
        self.conv: Conversation | None = None
        self.snapshot: AgentSnapshot | None = None

    async def run(self) -> Checkpoint:
        """Run (or resume) the test to its verdict; returns the final checkpoint."""
        deps, job = self.deps, self.job
        await deps.checkpoints.claim(job.run_id, deps.token)
        cp = await deps.checkpoints.load(job.run_id)
        if cp is None:
            # Never checkpointed: a first delivery, or the previous owner died before its first
            # step. Either way a fresh attempt, numbered by delivery so it supersedes older ones.
            attempt = max(1, self.deliveries)
            conv_id = conversation_id(job.run_id, attempt)
            cp = Checkpoint(run_id=job.run_id, attempt=attempt, conversation_id=conv_id)
            await self._end_older_attempts(cp)
            await self._save(cp)
        self.cp = cp
        self.log.info("agent_test.claimed", attempt=cp.attempt, phase=cp.phase, deliveries=self.deliveries)
        try:
            if cp.phase != "finished" and self.deliveries > deps.max_attempts:
                detail = "the run failed on several workers in a row"
                raise RunFailed(Codes.AGENT_TEST_RUN_FAILED, detail=detail)
            await self._republish()
            while cp.phase != "finished":
                await self._step(cp)
        except RunFailed as exc:
            await self._fail(cp, exc.code, exc.params)
        finally:
            if self.conv is not None:
                await self.conv.detach()
        return cp

    async def _end_older_attempts(self, cp: Checkpoint) -> None:
        """A session an older attempt may have left open is ended, not left to time out."""
        for attempt in range(1, cp.attempt):
            older = conversation_id(cp.run_id, attempt)
            try:
                await self.deps.conversation(older, 0).end(f"agent-test:{cp.run_id}:{attempt}:end")
            except Exception as exc:  # best effort: the session times out by itself anyway
                self.log.warning("agent_test.end_older_failed", attempt=attempt, error=str(exc))

    # ----------------------------------------------------------------------------- steps

    async def _step(self, cp: Checkpoint) -> None:
        if cp.phase == "starting":
            await self._start(cp)
        elif cp.phase == "agent":
            await self._agent_turn(cp)
        elif cp.phase == "attacker":
            await self._attacker_turn(cp)
        elif cp.phase == "closing":
            conv = await self._conversation(cp)
            await conv.end(self._msg_id(cp, "end"))
            cp.phase = "auditing"
            await self._save(cp)
            await self._progress(cp, RunStatus.AUDITING)
        elif cp.phase == "auditing":
            await self._audit(cp)

    async def _start(self, cp: Checkpoint) -> None:
        snapshot = await self._snapshot()
        if snapshot.protocol is not None:
            raise RunFailed(Codes.AGENT_TEST_UNSUPPORTED_AGENT, agent_id=str(snapshot.agent_id))
        conv = await self._conversation(cp)
        await conv.start(
            SessionStart(
                conversation_id=cp.conversation_id,
                agent_id=str(self.job.agent_id),
                principal=self.job.principal,
                channel=CHANNEL,
                started_at=datetime.now(UTC),
                connection_id=self._connection_id(cp),
            )
        )
        cp.phase = "agent"
        cp.engine = self._selection(snapshot).engine
        await self._save(cp)
        await self._progress(cp, RunStatus.RUNNING)

    async def _agent_turn(self, cp: Checkpoint) -> None:
        conv = await self._conversation(cp)
        try:
            turn = await conv.next_turn(self.deps.turn_timeout_s)
        except TurnTimeout as exc:
            raise RunFailed(Codes.AGENT_TEST_RUN_FAILED, detail=str(exc)) from exc
        line = None
        if turn.text:
            line = Line(index=len(cp.transcript) + 1, role=MessageRole.AGENT, content=turn.text)
            cp.transcript.append(line)
        cp.out_index = turn.last_index
        if turn.closed is not None:
            cp.phase = "auditing"  # the agent ended the session itself
        elif cp.attacker_turns >= self.job.test.max_turns:
            cp.phase = "closing"
        else:
            cp.phase = "attacker"
        await self._save(cp)
        if line is not None:
            await self._message(cp, line)
        if turn.closed is not None:
            await self._progress(cp, RunStatus.AUDITING)

    async def _attacker_turn(self, cp: Checkpoint) -> None:
        if cp.pending is None:
            answer = await self._complete(attacker_messages(self.job.test, cp.transcript))
            said = attacker_said(answer)
            if said is None:
                cp.phase = "closing"
                await self._save(cp)
                return
            cp.pending = Line(index=len(cp.transcript) + 1, role=MessageRole.ATTACKER, content=said)
            await self._save(cp)
        line = cp.pending
        conv = await self._conversation(cp)
        msg_id = self._msg_id(cp, f"say:{line.index}")
        if not await conv.sent(msg_id):
            await conv.say(line.content, msg_id)
        cp.transcript.append(line)
        cp.pending = None
        cp.attacker_turns += 1
        cp.phase = "agent"
        await self._save(cp)
        await self._message(cp, line)
        await self._progress(cp, RunStatus.RUNNING)

    async def _audit(self, cp: Checkpoint) -> None:
        snapshot = await self._snapshot()
        messages = auditor_messages(self.job.test, agent_instructions(snapshot), cp.transcript)
        remarks = None
        problem = ""
        for _ in range(2):  # a model that slipped once usually answers right the second time
            try:
                remarks = read_remarks(await self._complete(messages), self.job.test.criteria, cp.transcript)
                break
            except AuditUnreadable as exc:
                problem = str(exc)
        if remarks is None:
            raise RunFailed(Codes.AGENT_TEST_AUDIT_FAILED, detail=problem)
        cp.remarks = remarks
        cp.status = RunStatus.FAILED if any(r.verdict is Verdict.FAIL for r in remarks) else RunStatus.PASSED
        cp.phase = "finished"
        await self._save(cp)
        await self._finished(cp)
        self.log.info("agent_test.finished", status=cp.status.value, turns=cp.attacker_turns)

    async def _fail(self, cp: Checkpoint, code: ErrorCode, params: dict[str, Any]) -> None:
        if cp.phase in ("agent", "attacker", "closing"):
            try:  # leave no session waiting for a user who is gone
                conv = await self._conversation(cp)
                await conv.end(self._msg_id(cp, "end"))
            except Exception as exc:
                self.log.warning("agent_test.end_failed", error=str(exc))
        cp.status = RunStatus.ERROR
        cp.error = envelope(code, params=params)
        cp.phase = "finished"
        await self._save(cp)
        await self._finished(cp)
        self.log.warning("agent_test.error", code=code.code, **params)

    # ----------------------------------------------------------------------------- helpers

    async def _snapshot(self) -> AgentSnapshot:
        if self.snapshot is None:
            try:
                self.snapshot = await self.deps.agents.get(str(self.job.agent_id))
            except ParleyError as exc:
                raise RunFailed(
                    Codes.AGENT_TEST_RUN_FAILED, detail=f"the agent could not be loaded: {exc.message}"
                ) from exc
        return self.snapshot

    def _selection(self, snapshot: AgentSnapshot) -> LLMSelection:
        model = self._model()
        try:
            if model == BUILTIN:  # the engine itself, whatever the default engine is
                return self.deps.registry.select(engine=BUILTIN, secrets=snapshot.secrets)
            return self.deps.registry.select(model=model, secrets=snapshot.secrets)
        except ParleyError as exc:  # an unknown engine, say
            raise RunFailed(exc.code, **(exc.params or {})) from exc

    def _model(self) -> str:
        return self.job.model or self.deps.default_model

    async def _complete(self, messages: list[ChatMessage]) -> str:
        selection = self._selection(await self._snapshot())
        turn = await collect(
            selection.provider.stream(ChatRequest(model=selection.model, messages=messages, temperature=0))
        )
        if turn.error is not None:
            raise RunFailed(turn.error.code, **(turn.error.params or {}))
        return turn.message.content

    async def _conversation(self, cp: Checkpoint) -> Conversation:
        if self.conv is None:
            self.conv = self.deps.conversation(cp.conversation_id, cp.out_index)
            await self.conv.attach()
        return self.conv

    def _connection_id(self, cp: Checkpoint) -> str:
        return f"agent-test-{cp.conversation_id}"

    def _msg_id(self, cp: Checkpoint, name: str) -> str:
        return f"agent-test:{cp.run_id}:{cp.attempt}:{name}"

    async def _save(self, cp: Checkpoint) -> None:
        await self.deps.checkpoints.save(cp, self.deps.token)

    # ----------------------------------------------------------------------------- results

    async def _republish(self) -> None:
        """What the checkpoint says happened, again (no-ops for the catalog if it has them)."""
        cp = self.cp
        assert cp is not None
        for line in cp.transcript:
            await self._message(cp, line)
        if cp.phase == "finished":
            await self._finished(cp)
        elif cp.phase != "starting":
            status = RunStatus.AUDITING if cp.phase == "auditing" else RunStatus.RUNNING
            await self._progress(cp, status, bump=False)

    async def _progress(self, cp: Checkpoint, status: RunStatus, *, bump: bool = True) -> None:
        if bump:
            cp.step += 1
            await self._save(cp)
        await self._publish(
            cp,
            f"progress:{cp.step}",
            RunProgress,
            step=cp.step,
            status=status,
            conversation_id=cp.conversation_id,
            turns_done=cp.attacker_turns,
            engine=cp.engine,
        )

    async def _message(self, cp: Checkpoint, line: Line) -> None:
        await self._publish(
            cp, f"message:{line.index}", RunMessage, index=line.index, role=line.role, content=line.content
        )

    async def _finished(self, cp: Checkpoint) -> None:
        assert cp.status is not None
        await self._publish(
            cp,
            "finished",
            RunFinished,
            step=cp.step + 1,
            status=cp.status,
            turns_done=cp.attacker_turns,
            remarks=cp.remarks,
            error=cp.error,
        )

    async def _publish(
        self, cp: Checkpoint, name: str, kind: type[RunProgress | RunMessage | RunFinished], **fields: Any
    ) -> None:
        """One of the run's events, under an id that is the same for this attempt however often it
        is published (a republication after a crash is dropped)."""
        await self.deps.publish(
            kind(
                event_id=event_id(cp.run_id, cp.attempt, name),
                run_id=cp.run_id,
                attempt=cp.attempt,
                at=datetime.now(UTC),
                **fields,
            )
        )
