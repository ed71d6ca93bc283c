"""Mint scoped client tokens: a signed JWT whose `jti` names a row that can be revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.settings import AuthSettings
from parley_auth.tokens.models import ClientToken
from parley_auth.verification import CLIENT_TOKEN_AUDIENCE
from parley_common.auth_contract import CredentialKind, Principal, TokenEnv
from parley_common.errors import Codes, ParleyError

TokenType = Literal["chat", "voice"]


async def mint(
    db: AsyncSession,
    settings: AuthSettings,
    principal: Principal,
    *,
    token_type: TokenType,
    agent_id: str,
    env: TokenEnv,
    ttl_seconds: int,
    data: dict[str, Any] | None,
) -> tuple[str, ClientToken]:
    """A token minted with an API key (`POST /chat/tokens`, `/voice/tokens`)."""
    return await _issue(
        db,
        settings,
        principal,
        api_key_id=principal.credential_id,
        session_id=None,
        token_type=token_type,
        agent_id=agent_id,
        env=env,
        data=data,
        expires_at=_now() + timedelta(seconds=ttl_seconds),
    )


async def mint_for_caller(
    db: AsyncSession,
    settings: AuthSettings,
    principal: Principal,
    *,
    agent_id: str,
    token_type: TokenType,
    ttl_seconds: int,
) -> tuple[str, ClientToken]:
    """A short-lived token for `agent_id` on behalf of any caller (`auth.token.mint`).

    The new token is rooted where the caller's credential is: an API key (which needs
    `tokens:mint`, as for `POST /chat/tokens`), a browser session, or, for a client token, the root
    of that token, whose agent, organization, environment and `data` it keeps. It never outlives
    the credential that asked for it. Which agent the caller may use was checked by the service
    asking (auth does not know agents); a client token can only ask for its own.
    """
    expires_at = _now() + timedelta(seconds=ttl_seconds)
    if principal.expires_at is not None:
        expires_at = min(expires_at, principal.expires_at)
    env, data = TokenEnv.PRODUCTION, None
    if principal.kind is CredentialKind.API_KEY:
        if not principal.has_scope("tokens:mint"):
            raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": "tokens:mint"})
        api_key_id, session_id = principal.credential_id, None
    elif principal.kind is CredentialKind.SESSION:
        api_key_id, session_id = None, principal.credential_id
    else:
        if principal.agent_id != agent_id:
            raise ParleyError(Codes.REALTIME_TOKEN_SCOPE_MISMATCH)
        api_key_id, session_id = principal.api_key_id, principal.session_id
        env, data = principal.env or TokenEnv.PRODUCTION, principal.data
    return await _issue(
        db,
        settings,
        principal,
        api_key_id=api_key_id,
        session_id=session_id,
        token_type=token_type,
        agent_id=agent_id,
        env=env,
        data=data,
        expires_at=expires_at,
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def _issue(
    db: AsyncSession,
    settings: AuthSettings,
    principal: Principal,
    *,
    api_key_id: UUID | None,
    session_id: UUID | None,
    token_type: TokenType,
    agent_id: str,
    env: TokenEnv,
    data: dict[str, Any] | None,
    expires_at: datetime,
) -> tuple[str, ClientToken]:
    assert principal.user_id is not None
    now = _now()
    row = ClientToken(
        api_key_id=api_key_id,
        session_id=session_id,
        user_id=principal.user_id,
        org_id=principal.org_id,
        agent_id=agent_id,
        env=env.value,
        token_type=token_type,
        data=data,
        created_at=now,
        expires_at=expires_at.replace(microsecond=0),
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
