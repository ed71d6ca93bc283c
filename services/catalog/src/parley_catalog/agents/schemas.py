"""HTTP schemas of the agent endpoints (Kivox spec `Agent`, `CreateAgentRequest`, …)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from parley_catalog.jsonsafe import ensure_clean
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import AgentConfig, AgentStatus

SecretKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class AgentSecret(BaseModel):
    """Spec `AgentSecret`. Written in clear; every response shows `value` masked (`••••` plus the
    last four characters of values of 16 characters or more). Writing a masked value back keeps
    the stored secret."""

    key: SecretKey
    value: Annotated[str, Field(min_length=1, max_length=10_000)]
    description: Annotated[str, Field(max_length=1000)] | None = None


def _unique_keys(secrets: list[AgentSecret] | None) -> list[AgentSecret] | None:
    if secrets is not None:
        keys = [s.key for s in secrets]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate secret key {duplicates[0]}")
    return secrets


SecretList = Annotated[list[AgentSecret], Field(max_length=100), AfterValidator(_unique_keys)]


class Agent(BaseModel):
    id: UUID
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
    template_id: UUID | None = None
    config: AgentConfig
    secrets: list[AgentSecret]
    blueprint: Blueprint
    status: AgentStatus
    created_at: datetime
    updated_at: datetime


class AgentPage(BaseModel):
    items: list[Agent]
    total: int
    limit: int
    page: int


CleanBlueprint = Annotated[Blueprint, AfterValidator(ensure_clean)]


class CreateAgentRequest(BaseModel):
    template_id: UUID | None = None
    config: AgentConfig | None = None
    secrets: SecretList | None = None
    blueprint: CleanBlueprint | None = None


class UpdateAgentRequest(BaseModel):
    """Each field given replaces the stored one entirely (config included); absent or null
    fields are left as they are."""

    config: AgentConfig | None = None
    secrets: SecretList | None = None
    blueprint: CleanBlueprint | None = None


class UpdateAgentStatusRequest(BaseModel):
    status: AgentStatus


class LintAgentRequest(BaseModel):
    blueprint: CleanBlueprint | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        # A `null` body lints the saved blueprint, as an empty one does (clients sent it before the
        # body was a required `LintAgentRequest`).
        return {} if data is None else data


class LintDiagnostic(BaseModel):
    """One lint finding, structured (Parley addition; `errors` has the same findings as text)."""

    code: str = Field(description="Stable identifier of the kind of problem, e.g. `graph.no_start`.")
    message: str
    entry: str | None = None
    node_id: str | None = None
    edge_id: str | None = None


class AgentLintDiagnostics(BaseModel):
    errors: list[str] = Field(description="Every problem found; empty means the blueprint will run.")
    diagnostics: list[LintDiagnostic] = Field(
        default_factory=list, description="The same problems, one object each, with where they are."
    )
