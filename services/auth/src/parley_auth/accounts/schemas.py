"""Request and response bodies of the account endpoints, as in the Kivox spec."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Password = Annotated[str, Field(min_length=8, max_length=256)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
AvatarUrl = Annotated[AnyHttpUrl, Field(max_length=2048)]


class StrictBody(BaseModel):
    # Unknown fields are ignored (forward compatibility) but types are never coerced from strings.
    model_config = ConfigDict(strict=False, str_max_length=10_000)


class SignupRequest(StrictBody):
    email: EmailStr
    password: Password
    name: Name


class LoginRequest(StrictBody):
    email: EmailStr
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RecoverPasswordRequest(StrictBody):
    email: EmailStr


class ResetPasswordRequest(StrictBody):
    token: Annotated[str, Field(min_length=1, max_length=512)]
    password: Password


class AuthSessionResponse(BaseModel):
    expires_at: datetime


class User(BaseModel):
    id: UUID
    email: EmailStr
    name: str
    avatar_url: str | None = None
    created_at: datetime
    updated_at: datetime


class UpdateUserRequest(StrictBody):
    name: Name | None = None
    avatar_url: AvatarUrl | None = None


class UpdateEmailRequest(StrictBody):
    email: EmailStr
    # Parley extension (the contract has only `email`): needed when the caller is an API key.
    current_password: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="The account's current password. Required when calling with an API key; a "
        "browser session may omit it.",
    )
