"""Scoped client tokens: minting, TTL bounds, scope binding, expiry and revocation."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from parley_auth.context import AuthContext
from parley_auth.verification import verify_credential
from parley_common.auth_contract import CredentialKind

from .support import Accounts, assert_envelope, new_client


@pytest.mark.parametrize(("path", "default_ttl"), [("/chat/tokens", 3600), ("/voice/tokens", 21600)])
async def test_mint_defaults_and_claims(
    accounts: Accounts, auth_app: FastAPI, ctx: AuthContext, path: str, default_ttl: int
) -> None:
    user = await accounts.create()
    key = await user.api_key()
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        resp = await keyed.post(
            path, json={"workflow_id": "wf_123", "env": "staging", "data": {"name": "Jo"}}
        )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    token = body["token"]
    if path == "/chat/tokens":
        assert set(body) == {"token", "expires_at"}
        lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.now(UTC)
        assert default_ttl - 5 < lifetime.total_seconds() <= default_ttl
    else:
        assert set(body) == {"url", "token", "room_name", "run_id"}
        assert body["url"].startswith("ws") and body["url"].endswith("/realtime")
    async with ctx.db.sessions() as db:
        principal = await verify_credential(db, ctx.settings, token)
    assert principal.kind is CredentialKind.CLIENT_TOKEN
    assert principal.agent_id == "wf_123" and principal.env == "staging" and principal.user_id == user.id
    assert principal.token_type == ("chat" if path == "/chat/tokens" else "voice")
    assert principal.data == {"name": "Jo"}


@pytest.mark.parametrize("ttl", [59, 86401, 0, -5, "3600", 1.5])
async def test_ttl_out_of_range_is_422(accounts: Accounts, auth_app: FastAPI, ttl: object) -> None:
    user = await accounts.create()
    key = await user.api_key()
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        for path in ("/chat/tokens", "/voice/tokens"):
            resp = await keyed.post(path, json={"workflow_id": "wf", "ttl_seconds": ttl})
            assert_envelope(resp, 422, "request.validation_failed")


@pytest.mark.parametrize("ttl", [60, 86400])
async def test_ttl_bounds_inclusive(accounts: Accounts, auth_app: FastAPI, ttl: int) -> None:
    user = await accounts.create()
    key = await user.api_key()
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        assert (
            await keyed.post("/chat/tokens", json={"workflow_id": "wf", "ttl_seconds": ttl})
        ).status_code == 201


async def test_only_api_keys_with_scope_mint(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    assert_envelope(await user.client.post("/chat/tokens", json={"workflow_id": "wf"}), 403, "auth.forbidden")
    narrow = await user.api_key(scopes=["account:read"])
    async with new_client(auth_app, headers={"Authorization": f"Bearer {narrow}"}) as keyed:
        assert_envelope(
            await keyed.post("/chat/tokens", json={"workflow_id": "wf"}), 403, "auth.insufficient_scope"
        )
    async with new_client(auth_app) as anon:
        assert_envelope(await anon.post("/chat/tokens", json={"workflow_id": "wf"}), 401)
    minting = await user.api_key(scopes=["tokens:mint"])
    async with new_client(auth_app, headers={"Authorization": f"Bearer {minting}"}) as keyed:
        resp = await keyed.post("/chat/tokens", json={"workflow_id": "wf"})
        assert resp.status_code == 201
        token = resp.json()["token"]
    # A client token is for talking to one agent, never for account endpoints.
    async with new_client(auth_app, headers={"Authorization": f"Bearer {token}"}) as end_user:
        assert_envelope(await end_user.get("/users/me"), 403, "auth.forbidden")
        assert_envelope(await end_user.post("/chat/tokens", json={"workflow_id": "wf"}), 403)


async def test_org_key_binds_token_to_org(accounts: Accounts, auth_app: FastAPI, ctx: AuthContext) -> None:
    user = await accounts.create()
    slug = f"tok-{user.id.hex[:8]}"
    org = (await user.client.post("/orgs", json={"name": "T", "slug": slug})).json()
    key = await user.api_key(org_slug=slug)
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        token = (await keyed.post("/chat/tokens", json={"workflow_id": "wf"})).json()["token"]
    async with ctx.db.sessions() as db:
        principal = await verify_credential(db, ctx.settings, token)
    assert str(principal.org_id) == org["id"] and principal.env == "production"


async def test_expiry_revocation_and_forgery(accounts: Accounts, auth_app: FastAPI, ctx: AuthContext) -> None:
    user = await accounts.create()
    key = await user.api_key()
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        first = (await keyed.post("/chat/tokens", json={"workflow_id": "wf"})).json()["token"]
        second = (await keyed.post("/chat/tokens", json={"workflow_id": "wf"})).json()["token"]

    async def verify(token: str) -> str:
        from parley_common.errors import ParleyError

        async with ctx.db.sessions() as db:
            try:
                await verify_credential(db, ctx.settings, token)
            except ParleyError as exc:
                return exc.code.code
        return "ok"

    assert await verify(first) == "ok"
    async with ctx.db.sessions() as db:
        minted = await verify_credential(db, ctx.settings, first)
    key_id = (await user.client.get("/auth/api-keys")).json()[0]["id"]
    assert str(minted.api_key_id) == key_id  # what a revocation of the key is matched against
    # Expired in the ledger (the JWT's own exp is covered by forging one below).
    jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE auth.client_tokens SET expires_at = now() - interval '1 s' WHERE id = :i"),
            {"i": jti},
        )
    assert await verify(first) == "auth.credential_expired"
    claims = jwt.decode(second, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": 1}, ctx.settings.auth_token_secret, algorithm="HS256")
    assert await verify(expired) == "auth.credential_expired"
    forged = jwt.encode({**claims, "sub": "other-agent"}, "not-the-secret-" + "x" * 32, algorithm="HS256")
    assert await verify(forged) == "auth.unauthenticated"
    # Revoking the minting key revokes every token it minted.
    assert (await user.client.delete(f"/auth/api-keys/{key_id}")).status_code == 204
    assert await verify(second) == "auth.credential_revoked"
    # Revocation is answered before expiry: an expired token of a revoked key reads as revoked.
    assert await verify(first) == "auth.credential_revoked"
    assert await verify(expired) == "auth.credential_revoked"
