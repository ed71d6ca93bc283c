"""Bodies of the Octavus agent endpoints, shaped as @octavus/cli 2.0.0 parses them
(docs/octavus-wire.md, "@octavus/cli 2.0.0")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley_common.octavus import AgentPrompt

# Request sizes are bounded by the app's body limit; these stop silly shapes early.
ProtocolText = Annotated[str, Field(max_length=1_000_000)]
PromptList = Annotated[list[AgentPrompt], Field(max_length=200)]


class DefinitionBody(BaseModel):
    """`POST /api/agents/validate` and `POST /api/agents`: what `readAgentDefinition` sends.

    `settings` is taken as an object and checked by the validator, so a bad settings.json is
    reported as validation issues rather than as a request error."""

    settings: dict[str, Any]
    protocol: ProtocolText
    prompts: PromptList = Field(default_factory=list)


class UpdateBody(BaseModel):
    """`PATCH /api/agents/{slug}?by=slug`: sync sends protocol and prompts only; settings are
    never changed by sync. Absent `prompts` keeps the stored ones."""

    protocol: ProtocolText
    prompts: PromptList | None = None


class WriteResult(BaseModel):
    """`{agentId, message}`, the answer to create and update."""

    agentId: str
    message: str


class AgentSummary(BaseModel):
    """An entry of `GET /api/agents`; `description` is always present (null allowed)."""

    slug: str
    id: str
    name: str
    description: str | None
    format: Literal["interactive", "worker"]
    createdAt: datetime
    updatedAt: datetime
    projectId: str


class AgentList(BaseModel):
    agents: list[AgentSummary]


class SettingsOut(BaseModel):
    """settings.json as stored; `description` absent rather than null (the CLI's zod rejects null)."""

    model_config = ConfigDict(extra="ignore")

    slug: str
    name: str
    description: str | None = None
    format: Literal["interactive", "worker"]


class AgentOut(BaseModel):
    """`GET /api/agents/{id}` and `GET /api/agents/{slug}?by=slug`."""

    settings: SettingsOut
    protocol: str
    prompts: list[AgentPrompt]
    id: str
