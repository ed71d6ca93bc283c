"""HTTP schemas of the agent-test endpoints.

The HappyRobot SDK 0.1.18 names these types (`AdversarialTest`, `AdversarialTestRun`,
`AdversarialTestRunMessage`, `AuditRemark`, `AdversarialTestEffectiveScope`, and the bodies of its
routes) but its zod schemas are not in any package the registry serves, so Parley designs the
bodies; docs/agent-tests.md documents them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from parley_common.agent_test_contract import (
    Criterion,
    MessageRole,
    RunStatus,
    Severity,
    TestCategory,
    Verdict,
)
from parley_common.errors import ErrorEnvelope

Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
NodeId = Annotated[str, Field(min_length=1, max_length=200)]
AttackLines = Annotated[list[Annotated[str, Field(min_length=1, max_length=4000)]], Field(max_length=50)]
Criteria = Annotated[list[Criterion], Field(min_length=1, max_length=50)]
ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ToolNames = Annotated[list[ToolName], Field(max_length=50)]
MaxTurns = Annotated[int, Field(ge=1, le=20)]
DEFAULT_TURNS = 4


class AdversarialTest(BaseModel):
    id: UUID
    agent_id: UUID
    node_id: str | None = Field(
        default=None, description="The node (blueprint node id, or protocol trigger) the test targets."
    )
    name: str
    category: TestCategory
    persona: str = Field(description="Who the simulated user plays.")
    goal: str = Field(description="What the simulated user tries to make the agent do.")
    attack_lines: list[str] = Field(description="Messages the simulated user says, in order.")
    max_turns: int = Field(description="Most messages the simulated user sends.")
    criteria: list[Criterion] = Field(description="What the auditor checks.")
    tools: list[str] = Field(description="Tools the test needs; it applies only while the agent has them.")
    enabled: bool
    origin: Literal["generated", "manual"]
    created_at: datetime
    updated_at: datetime


class AdversarialTestList(BaseModel):
    items: list[AdversarialTest]


class CreateAdversarialTestBody(BaseModel):
    name: Name
    category: TestCategory = TestCategory.CUSTOM
    node_id: NodeId | None = None
    persona: Text
    goal: Text
    attack_lines: AttackLines = Field(default_factory=list)
    max_turns: MaxTurns = DEFAULT_TURNS
    criteria: Criteria
    tools: ToolNames = Field(default_factory=list)
    enabled: bool = True


class PatchAdversarialTestBody(BaseModel):
    """Fields given replace the stored ones; `node_id: null` detaches the test from its node."""

    name: Name | None = None
    category: TestCategory | None = None
    node_id: NodeId | None = None
    persona: Text | None = None
    goal: Text | None = None
    attack_lines: AttackLines | None = None
    max_turns: MaxTurns | None = None
    criteria: Criteria | None = None
    tools: ToolNames | None = None
    enabled: bool | None = None


class GenerateAdversarialTestsResponse(BaseModel):
    created: list[AdversarialTest] = Field(description="Starter tests made now.")
    existing: list[AdversarialTest] = Field(description="Starter tests the agent already had (kept).")


class RunAdversarialTestBody(BaseModel):
    agent_id: UUID
    test_ids: Annotated[list[UUID], Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="Tests to run; all tests in the effective scope when absent."
    )
    model: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@-]+$")] | None = (
        Field(
            default=None,
            description="Engine/model of the simulated user and the auditor (e.g. `openai/gpt-4o`); "
            "the runtime's default (the built-in engine) when absent.",
        )
    )


class AuditRemark(BaseModel):
    criterion_id: str
    criterion: str
    verdict: Verdict
    severity: Severity
    message_index: int | None = Field(default=None, description="The transcript message it points at.")
    quote: str | None = Field(default=None, description="The decisive words, as the message has them.")
    explanation: str


class AdversarialTestRun(BaseModel):
    id: UUID
    batch_id: UUID
    agent_id: UUID
    agent_version: int
    test_id: UUID
    test_name: str
    category: TestCategory
    node_id: str | None = None
    status: RunStatus
    attempt: int = Field(description="Starts over (a new conversation) after a lost checkpoint.")
    turns_done: int
    max_turns: int
    conversation_id: UUID | None = None
    engine: str | None = Field(default=None, description="The engine that played user and auditor.")
    model: str | None = None
    remarks: list[AuditRemark]
    error: ErrorEnvelope | None = None
    started_by_user_id: UUID | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime


class RunAdversarialTestResponse(BaseModel):
    batch_id: UUID
    runs: list[AdversarialTestRun]


class GetAdversarialTestRunsResponse(BaseModel):
    items: list[AdversarialTestRun]
    next_cursor: str | None = None


class AdversarialTestRunMessage(BaseModel):
    index: int
    role: MessageRole
    content: str
    created_at: datetime


class GetAdversarialTestRunMessagesResponse(BaseModel):
    run_id: UUID
    status: RunStatus
    items: list[AdversarialTestRunMessage]


class ScopeNode(BaseModel):
    id: str
    type: str


class ExcludedTest(BaseModel):
    test_id: UUID
    reason: Literal["disabled", "node_missing", "tool_missing"]


class AgentTestResult(BaseModel):
    """The agent's latest test batch, as far as publishing is concerned."""

    agent_id: UUID
    agent_version: int
    status: Literal["passed", "failed", "running", "not_run", "stale"] = Field(
        description="`stale`: the latest batch ran on an older version, or not on every test in scope."
    )
    batch_id: UUID | None = None
    batch_version: int | None = None
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    running: int = 0
    finished_at: datetime | None = None


class AdversarialTestEffectiveScope(BaseModel):
    agent_id: UUID
    agent_version: int
    definition: Literal["blueprint", "protocol"]
    nodes: list[ScopeNode]
    tools: list[str]
    tests: list[UUID] = Field(description="Enabled tests whose node and tools exist in this version.")
    excluded: list[ExcludedTest]
    gate_publish: bool
    result: AgentTestResult


class AgentTestSettingsBody(BaseModel):
    gate_publish: bool = Field(description="Going live needs a passing test run of the agent's version.")


class AgentTestSettingsOut(BaseModel):
    gate_publish: bool
    updated_at: datetime | None = None
