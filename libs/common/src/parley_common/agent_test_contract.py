"""Agent tests (adversarial test suites): the run jobs the catalog queues for the runtime workers,
and the results the workers send back.

- `agent_tests.run` (JetStream stream `AGENT_TESTS`, work-queue retention): one `AgentTestJob` per
  test run, published by the catalog (`Nats-Msg-Id` = the run id). Runtime workers pull it from the
  durable consumer `runtime-agent-tests`, each with its own concurrency limit, separate from the
  session queue so tests never take a live user's slot. The worker keeps the job in progress while
  it runs; if the worker dies, JetStream hands the job to another worker, which resumes the run from
  its checkpoint in Redis (or restarts it as a new attempt when there is none).
- `agent_tests.results.<run_id>` (stream `AGENT_TEST_RESULTS`, limits retention): `AgentTestEvent`s
  from the worker running the test (progress, each transcript message, the verdict). The catalog
  persists them from a durable consumer. Every event is idempotent (`event_id`) and carries its
  place in the run (`attempt`, `step`, message `index`), so redelivery, replays after a worker
  crash and reordering change nothing.

A durable stream rather than request/reply: a worker never waits for the catalog (a catalog being
restarted delays results, it never fails a run), and nothing a run produced is lost in between.
See docs/agent-tests.md.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, Field

from parley_common import subjects
from parley_common.auth_contract import Principal
from parley_common.errors import ErrorEnvelope
from parley_common.jetstream import by_name, file_stream
from parley_common.settings import common_settings

# ------------------------------------------------------------------------------ streams

_DAY = 24 * 3600.0
STREAMS: dict[str, StreamConfig] = by_name(
    file_stream(subjects.AGENT_TESTS_STREAM, subjects.AGENT_TEST_RUN, _DAY, 600.0, work_queue=True),
    file_stream(subjects.AGENT_TEST_RESULTS_STREAM, f"{subjects.AGENT_TEST_RESULTS}.>", 7 * _DAY, 600.0),
)


async def ensure_streams(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create both streams when missing (the catalog and the runtimes both call this; the
    definitions are the same, so whoever starts first creates them)."""
    copies = replicas if replicas is not None else common_settings().jetstream_replicas
    for name, config in STREAMS.items():
        try:
            await js.stream_info(name)
            continue
        except NotFoundError:
            pass
        try:
            await js.add_stream(dataclasses.replace(config, num_replicas=copies))
        except BadRequestError:
            await js.stream_info(name)  # created concurrently by another process


# ------------------------------------------------------------------------------ test definitions


class TestCategory(StrEnum):
    __test__ = False  # not a pytest class

    PROMPT_EXTRACTION = "prompt_extraction"
    PROMPT_INJECTION = "prompt_injection"
    FALSE_PROMISE = "false_promise"
    POLICY_BYPASS = "policy_bypass"
    LANGUAGE_SWITCH = "language_switch"
    CUSTOM = "custom"


class CriterionKind(StrEnum):
    MUST = "must"  # the agent must do this at least once
    MUST_NOT = "must_not"  # the agent must never do this


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    # The auditor could not decide (the built-in judge only checks the rules it knows).
    UNKNOWN = "unknown"


CriterionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Criterion(BaseModel):
    """One thing the auditor checks: what the agent must, or must never, do."""

    id: CriterionId
    kind: CriterionKind
    text: Annotated[str, Field(min_length=1, max_length=2000)]
    severity: Severity = Severity.HIGH


class TestDefinition(BaseModel):
    """What a run executes: the test as it was when the run was started."""

    __test__ = False

    test_id: UUID
    name: Annotated[str, Field(max_length=200)]
    category: TestCategory
    node_id: Annotated[str, Field(max_length=200)] | None = None
    persona: Annotated[str, Field(max_length=4000)]
    goal: Annotated[str, Field(max_length=4000)]
    attack_lines: Annotated[list[Annotated[str, Field(max_length=4000)]], Field(max_length=50)]
    max_turns: Annotated[int, Field(ge=1, le=50)]
    criteria: Annotated[list[Criterion], Field(min_length=1, max_length=50)]


class AgentTestJob(BaseModel):
    """`agent_tests.run`: one run of one test against one agent version."""

    run_id: UUID
    batch_id: UUID
    agent_id: UUID
    agent_version: int
    # Who started the run; the conversation runs as them (like a member trying a draft agent).
    principal: Principal
    test: TestDefinition
    # Engine and model of the simulated user and the auditor (`engine/model`, as in
    # docs/llm-providers.md); None: the runtime's setting (the built-in engine by default).
    model: Annotated[str, Field(max_length=200)] | None = None
    requested_at: datetime


# ------------------------------------------------------------------------------ results


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AUDITING = "auditing"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.PASSED, RunStatus.FAILED, RunStatus.ERROR)


class MessageRole(StrEnum):
    ATTACKER = "attacker"  # the simulated user
    AGENT = "agent"


class Remark(BaseModel):
    """The auditor's finding on one criterion."""

    criterion_id: CriterionId
    criterion: Annotated[str, Field(max_length=2000)]
    verdict: Verdict
    severity: Severity
    # The transcript message the remark points at (1-based index), when it points at one.
    message_index: Annotated[int, Field(ge=1)] | None = None
    quote: Annotated[str, Field(max_length=2000)] | None = None
    explanation: Annotated[str, Field(max_length=4000)] = ""


class _RunEvent(BaseModel):
    event_id: UUID
    run_id: UUID
    # Attempts restart a run from scratch (a new conversation); events of older attempts are stale.
    attempt: int = Field(ge=1)
    at: datetime


class RunProgress(_RunEvent):
    type: Literal["progress"] = "progress"
    # Orders the events of an attempt: a lower step never overwrites a higher one.
    step: int = Field(ge=0)
    status: Literal[RunStatus.RUNNING, RunStatus.AUDITING]
    conversation_id: UUID | None = None
    turns_done: int = Field(ge=0)
    engine: Annotated[str, Field(max_length=200)] | None = None


class RunMessage(_RunEvent):
    type: Literal["message"] = "message"
    index: int = Field(ge=1)
    role: MessageRole
    content: Annotated[str, Field(max_length=200_000)]


class RunFinished(_RunEvent):
    type: Literal["finished"] = "finished"
    step: int = Field(ge=0)
    status: Literal[RunStatus.PASSED, RunStatus.FAILED, RunStatus.ERROR]
    turns_done: int = Field(ge=0)
    remarks: Annotated[list[Remark], Field(max_length=50)] = Field(default_factory=list)
    error: ErrorEnvelope | None = None


AgentTestEvent = Annotated[RunProgress | RunMessage | RunFinished, Field(discriminator="type")]


def event_id(run_id: UUID, attempt: int, name: str) -> UUID:
    """The same id for the same event of the same attempt, however often it is published."""
    return uuid.uuid5(run_id, f"{attempt}:{name}")
