"""Org and member bodies, as in the Kivox spec."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, Field, StringConstraints

from parley_common.auth_contract import MemberRole

Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"),
]
OrgName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]


class OrgTier(StrEnum):
    FREE = "free"
    ENTERPRISE = "enterprise"


class Org(BaseModel):
    id: UUID
    created_by: UUID | None = None
    name: str
    description: str | None = None
    avatar_url: str | None = None
    slug: str
    tier: OrgTier
    created_at: datetime
    updated_at: datetime


class CreateOrgRequest(BaseModel):
    name: OrgName
    description: Description | None = None
    slug: Slug


class UpdateOrgRequest(BaseModel):
    name: OrgName | None = None
    description: Description | None = None
    avatar_url: Annotated[AnyHttpUrl, Field(max_length=2048)] | None = None


class OrgMember(BaseModel):
    org_id: UUID
    user_id: UUID
    role: MemberRole
    created_at: datetime
    updated_at: datetime


class AddMemberRequest(BaseModel):
    user_id: UUID
    role: Literal["admin", "member", "viewer"]


class UpdateMemberRequest(BaseModel):
    role: MemberRole
