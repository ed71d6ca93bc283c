"""HTTP schemas of the template endpoints (Kivox spec `Template`, `CreateTemplateRequest`, …)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field

from parley_catalog.agents.schemas import CleanBlueprint, SecretList
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import AgentConfig

Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=5000)]


class Template(BaseModel):
    """Spec `Template`. Secrets written with a template are stored encrypted and never returned;
    agents created from the template receive them."""

    id: UUID
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
    name: str
    description: str | None = None
    config: AgentConfig
    blueprint: Blueprint
    created_at: datetime
    updated_at: datetime


class TemplatePage(BaseModel):
    items: list[Template]
    total: int
    limit: int
    page: int


class CreateTemplateRequest(BaseModel):
    name: Name
    description: Description | None = None
    config: AgentConfig | None = None
    secrets: SecretList | None = None
    blueprint: CleanBlueprint | None = None


class UpdateTemplateRequest(BaseModel):
    """Given fields replace the stored ones; `description: null` clears it; other nulls are ignored."""

    name: Name | None = None
    description: Description | None = None
    config: AgentConfig | None = None
    secrets: SecretList | None = None
    blueprint: CleanBlueprint | None = None
