"""Mint scoped client tokens: a signed JWT whose `jti` names a row that can be revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.settings import AuthSettings
from parley_auth.tokens.models import ClientToken
from parley_auth.verification import CLIENT_TOKEN_AUDIENCE
from parley_common.auth_contract import Principal, TokenEnv


async def mint(
    db: AsyncSession,
    settings: AuthSettings,
    principal: Principal,
    *,
    token_type: Literal["chat", "voice"],
    agent_id: str,
    env: TokenEnv,
    ttl_seconds: int,
    data: dict[str, Any] | None,
) -> tuple[str, ClientToken]:
    assert principal.user_id is not None
    now = datetime.now(UTC).replace(microsecond=0)
    row = ClientToken(
        api_key_id=principal.credential_id,
        user_id=principal.user_id,
        org_id=principal.org_id,
        agent_id=agent_id,
        env=env.value,
        token_type=token_type,
        data=data,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    db.add(row)
    await db.flush()
    claims = {
        "jti": str(row.id),
        "aud": CLIENT_TOKEN_AUDIENCE,
        "iat": now,
        "exp": row.expires_at,
        "sub": agent_id,
        "org": str(principal.org_id) if principal.org_id else None,
        "env": env.value,
        "typ": token_type,
    }
    return jwt.encode(claims, settings.auth_token_secret, algorithm="HS256"), row
