"""CSRF tokens for `POST /api/realtime/webrtc`: minted by `GET /api/csrf-token`, bound to the
credential that asked for them, valid for 5 minutes (and reusable within them, so a retried
offer needs no new token). Kept in Redis by their SHA-256 only."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from redis.asyncio import Redis

from parley_common.auth_contract import Principal
from parley_common.errors import Codes, ParleyError

TTL_S = 300
MAX_TOKEN = 128


def _key(token: str) -> str:
    return "parley:gw:csrf:" + hashlib.sha256(token.encode()).hexdigest()


async def mint(redis: Redis, principal: Principal) -> str:
    token = secrets.token_urlsafe(32)
    await redis.set(_key(token), str(principal.credential_id), ex=TTL_S)
    return token


async def check(redis: Redis, token: str | None, principal: Principal) -> None:
    """403 `csrf.invalid` unless `token` was minted for this credential in the last 5 minutes."""
    if not token or len(token) > MAX_TOKEN:
        raise ParleyError(Codes.CSRF_INVALID)
    owner = await redis.get(_key(token))
    expected = str(principal.credential_id).encode()
    if owner is None or not hmac.compare_digest(
        owner if isinstance(owner, bytes) else owner.encode(), expected
    ):
        raise ParleyError(Codes.CSRF_INVALID)
