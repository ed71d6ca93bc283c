"""Turn a credential (cookie session, API key or client token) into a `Principal`.

Used in-process by the auth HTTP API and over the bus (`auth.verify`) by every other service.
It always reads the database, so a revocation is visible to the very next verification.

Revocation is checked before expiry: a credential that was revoked reads as revoked even once it
has also expired. The session gateway's periodic re-verification of open connections relies on it
(it ends a connection on `auth.credential_revoked`, not on expiry, which is checked at connect).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar
from uuid import UUID

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.accounts.models import User, UserSession
from parley_auth.apikeys.models import ApiKey
from parley_auth.security.credentials import API_KEY_PREFIX, token_hash
from parley_auth.settings import AuthSettings
from parley_auth.tokens.models import ClientToken
from parley_common.auth_contract import CredentialKind, Principal, TokenEnv
from parley_common.errors import Codes, ParleyError

CLIENT_TOKEN_AUDIENCE = "parley-client"


def infer_kind(credential: str) -> CredentialKind:
    if credential.startswith(API_KEY_PREFIX):
        return CredentialKind.API_KEY
    if credential.count(".") == 2:
        return CredentialKind.CLIENT_TOKEN
    return CredentialKind.SESSION


async def verify_credential(
    db: AsyncSession, settings: AuthSettings, credential: str, kind: CredentialKind | None = None
) -> Principal:
    kind = kind or infer_kind(credential)
    if kind is CredentialKind.API_KEY:
        return await _verify_api_key(db, settings, credential)
    if kind is CredentialKind.CLIENT_TOKEN:
        return await _verify_client_token(db, settings, credential)
    return await _verify_session(db, settings, credential)


class _Stored(Protocol):
    @property
    def revoked_at(self) -> datetime | None: ...


StoredT = TypeVar("StoredT", bound=_Stored)


def _unrevoked(row: StoredT | None) -> StoredT:
    """The stored credential a presented one names: unknown, then revoked, are refused first."""
    if row is None:
        raise ParleyError(Codes.UNAUTHENTICATED)
    if row.revoked_at is not None:
        raise ParleyError(Codes.CREDENTIAL_REVOKED)
    return row


def _now() -> datetime:
    return datetime.now(UTC)


async def _live_user(db: AsyncSession, user_id: UUID) -> User:
    user = await db.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise ParleyError(Codes.CREDENTIAL_REVOKED)
    return user


async def _verify_session(db: AsyncSession, settings: AuthSettings, token: str) -> Principal:
    row = _unrevoked(
        await db.scalar(
            select(UserSession).where(UserSession.token_hash == token_hash(settings.auth_token_secret, token))
        )
    )
    if row.expires_at <= _now():
        raise ParleyError(Codes.CREDENTIAL_EXPIRED)
    await _live_user(db, row.user_id)
    return Principal(
        kind=CredentialKind.SESSION,
        credential_id=row.id,
        user_id=row.user_id,
        scopes=["*"],
        expires_at=row.expires_at,
    )


async def _verify_api_key(db: AsyncSession, settings: AuthSettings, key: str) -> Principal:
    row = _unrevoked(
        await db.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(settings.auth_token_secret, key)))
    )
    await _live_user(db, row.created_by_user_id)
    _check_key_unexpired(row)
    now = _now()
    if row.last_used_at is None or now - row.last_used_at > timedelta(
        seconds=settings.auth_key_touch_interval_s
    ):
        await db.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        await db.commit()
    return Principal(
        kind=CredentialKind.API_KEY,
        credential_id=row.id,
        user_id=row.created_by_user_id,
        org_id=row.owner_org_id,
        scopes=list(row.scopes),
        expires_at=row.expires_at,
    )


def _check_key_unexpired(row: ApiKey) -> None:
    if row.expires_at is not None and row.expires_at <= _now():
        raise ParleyError(Codes.CREDENTIAL_EXPIRED)


async def _verify_client_token(db: AsyncSession, settings: AuthSettings, token: str) -> Principal:
    try:
        # `exp` is checked below, after revocation (see the module docstring).
        claims = jwt.decode(
            token,
            settings.auth_token_secret,
            algorithms=["HS256"],
            audience=CLIENT_TOKEN_AUDIENCE,
            options={"require": ["exp", "jti", "aud"], "verify_exp": False},
        )
        token_id = UUID(str(claims["jti"]))
        exp = float(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ParleyError(Codes.UNAUTHENTICATED) from exc
    row = _unrevoked(await db.get(ClientToken, token_id))
    # A client token lives only as long as the API key, or the browser session, that minted it.
    key = await db.get(ApiKey, row.api_key_id) if row.api_key_id is not None else None
    session = await db.get(UserSession, row.session_id) if row.session_id is not None else None
    root_revoked_at = (
        key.revoked_at if key is not None else session.revoked_at if session is not None else None
    )
    if (key is None and session is None) or root_revoked_at is not None:
        raise ParleyError(Codes.CREDENTIAL_REVOKED)
    await _live_user(db, row.user_id)
    now = _now()
    if row.expires_at <= now or exp <= now.timestamp():
        raise ParleyError(Codes.CREDENTIAL_EXPIRED)
    if key is not None:
        _check_key_unexpired(key)
    if session is not None and session.expires_at <= now:
        raise ParleyError(Codes.CREDENTIAL_EXPIRED)
    return Principal(
        kind=CredentialKind.CLIENT_TOKEN,
        credential_id=row.id,
        user_id=row.user_id,
        org_id=row.org_id,
        scopes=[f"{row.token_type}:connect"],
        agent_id=row.agent_id,
        env=TokenEnv(row.env),
        token_type="voice" if row.token_type == "voice" else "chat",
        data=row.data,
        api_key_id=row.api_key_id,
        session_id=row.session_id,
        expires_at=row.expires_at,
    )
