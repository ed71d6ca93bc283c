"""API key bodies, as in the Kivox spec (plus the optional `org_slug` extension for org keys)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, field_validator

from parley_common.auth_contract import SCOPES

KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AuthAPIKey(BaseModel):
    """API key record. The raw key value is never returned after creation."""

    id: UUID
    owner_user_id: UUID | None = None
    owner_org_id: UUID | None = None
    created_by_user_id: UUID
    name: str
    prefix: str
    scopes: list[str]
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    created_at: datetime


class AuthAPIKeyResponse(BaseModel):
    """Returned once when a key is created: `key` is the full raw value and is not shown again."""

    id: UUID
    name: str
    prefix: str
    key: str
    scopes: list[str]
    expires_at: datetime | None = None
    created_at: datetime

    @classmethod
    def of(cls, row: object, *, key: str) -> AuthAPIKeyResponse:
        """The stored key `row`, with its raw value `key` (which is not stored)."""
        return cls(key=key, **{name: getattr(row, name) for name in cls.model_fields if name != "key"})


class CreateAPIKeyRequest(BaseModel):
    name: KeyName
    scopes: Annotated[list[str], Field(max_length=len(SCOPES))] | None = None
    expires_at: AwareDatetime | None = None
    org_slug: Annotated[str, Field(max_length=64)] | None = Field(
        default=None,
        description="Parley extension: create a key owned by this organization (requires admin).",
    )

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {sorted(SCOPES)}")
        return sorted(set(value))

    @field_validator("expires_at")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value
