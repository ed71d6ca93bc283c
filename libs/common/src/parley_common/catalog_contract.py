"""Bus contract of the catalog: agent access checks, runtime snapshots, agent change events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, Field

from parley_common.auth_contract import Principal
from parley_common.blueprint import Blueprint
from parley_common.errors import BusReply
from parley_common.speech_contract import AgentVoiceConfig


class AgentStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    ARCHIVED = "archived"


class AgentLLMEngine(StrEnum):
    DEEPSEEK = "deepseek"
    MISTRAL = "mistral"
    GEMINI = "gemini"
    OPENAI = "openai"


class AgentConfig(BaseModel):
    """Spec `AgentConfig`."""

    avatar_url: Annotated[AnyHttpUrl, Field(max_length=2048)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5000)] | None = None
    language: Annotated[str, Field(max_length=35)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    global_system_prompt: Annotated[str, Field(max_length=50_000)] | None = None
    max_session_duration_minutes: Annotated[float, Field(gt=0, le=24 * 60)] | None = None
    max_silence_timeout_seconds: Annotated[float, Field(gt=0, le=24 * 3600)] | None = None
    allow_interruptions: bool | None = None
    llm_engine: AgentLLMEngine | None = None
    llm_model: Annotated[str, Field(max_length=200)] | None = None
    # Parley addition: speech engines and turn policy of the agent's voice sessions (docs/voice.md).
    voice: AgentVoiceConfig | None = None


class AgentAccessRequest(BaseModel):
    """May this principal open a session with this agent? (gateway → catalog)."""

    agent_id: Annotated[str, Field(max_length=200)]
    principal: Principal


class AgentAccessReply(BusReply):
    agent_id: str | None = None
    status: AgentStatus | None = None
    version: int | None = None
    # What `POST /api/realtime-token` tells about the agent (docs/webrtc.md): its owner org, its
    # LLM (`engine/model`) and TTS voice, when it names them.
    owner_org_id: UUID | None = None
    model: str | None = None
    voice: str | None = None
    # The agent's `config.voice` (engines, policy; secret *names* only): the gateway opens a voice
    # session's recognition with it.
    voice_config: AgentVoiceConfig | None = None
    # True: this answer depends only on the agent as it is now and on the principal's `kind`,
    # `org_id` and `agent_id` (a live agent: no membership was asked), so the asker may give it to
    # any principal alike in those until a `catalog.events.agent.*` event names this agent (the
    # gateway's `agent_access.AgentAccess`). False (a draft, checked against the caller's role in
    # its org, which no event announces): ask again every time.
    shared: bool = False


class AgentResolveRequest(BaseModel):
    """The runtime asks for what it executes. Only runtimes may use this subject (it carries
    decrypted secrets); restrict it with NATS permissions in production."""

    agent_id: Annotated[str, Field(max_length=200)]


class ToolFunction(BaseModel):
    """The `function` of an OpenAI function tool (ServiceAi `ChattyToolDefinition.function`)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=2000)]
    # A JSON schema of `type: object` (validated by the catalog when the tool is saved).
    parameters: dict[str, Any]


class ToolDefinition(BaseModel):
    """One entry of a tool catalogue, exactly the OpenAI function-tool shape."""

    type: Literal["function"] = "function"
    function: ToolFunction


class ToolResult(BaseModel):
    """The `{success, …}` envelope of `POST …/tools/execute` (ServiceAi contract)."""

    success: bool
    message: str | None = None
    error: str | None = None
    code: str | None = None
    data: Any = None
    action: Any = None


class AgentSnapshot(BaseModel):
    agent_id: UUID
    version: int
    status: AgentStatus
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
    config: AgentConfig
    blueprint: Blueprint | None = None
    # Octavus protocol agents: protocol.yaml parsed, settings.json, prompts by file name.
    protocol: dict[str, Any] | None = None
    secrets: dict[str, str] = Field(default_factory=dict)
    # The agent's tool catalogue (its own tools, then its org's not shadowed by name), for the LLM.
    tools: list[ToolDefinition] = Field(default_factory=list)


class AgentResolveReply(BusReply):
    snapshot: AgentSnapshot | None = None


class AgentEventKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    STATUS_CHANGED = "status_changed"
    DELETED = "deleted"


class AgentEvent(BaseModel):
    """Published on `catalog.events.agent.<kind>` after every change, so runtimes drop caches."""

    kind: AgentEventKind
    agent_id: UUID
    version: int
    status: AgentStatus
    at: datetime
