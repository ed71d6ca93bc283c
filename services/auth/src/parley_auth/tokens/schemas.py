"""Scoped client token bodies, as in the HappyRobot SDK (`client.chat.createToken`, `voice.createToken`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator

from parley_common.auth_contract import TokenEnv

CHAT_DEFAULT_TTL = 3600
VOICE_DEFAULT_TTL = 21600
# Strict: "3600" (a string) is a client bug worth reporting, not something to guess at.
TTL = Annotated[
    int, Field(strict=True, ge=60, le=86400, description="Token lifetime in seconds (60..86400).")
]
WorkflowId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_DATA_BYTES = 16_384


class _TokenRequest(BaseModel):
    workflow_id: WorkflowId = Field(description="The agent (workflow) the token may talk to.")
    data: dict[str, Any] | None = Field(default=None, description="Passed to the agent as session variables.")
    env: TokenEnv = TokenEnv.PRODUCTION

    @field_validator("data")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_DATA_BYTES:
            raise ValueError(f"data must serialize to at most {MAX_DATA_BYTES} bytes")
        return value


class CreateChatTokenRequest(_TokenRequest):
    ttl_seconds: TTL = CHAT_DEFAULT_TTL


class CreateVoiceTokenRequest(_TokenRequest):
    ttl_seconds: TTL = VOICE_DEFAULT_TTL


class CreateChatTokenResponse(BaseModel):
    token: str
    expires_at: datetime


class CreateVoiceTokenResponse(BaseModel):
    url: str = Field(description="WebSocket URL to connect to with the token.")
    token: str
    room_name: str
    run_id: str
