"""API keys: shown once, stored hashed, scopes, expiry, last_used_at, revocation, cross-user denial."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import text

from parley_auth.context import AuthContext

from .support import Accounts, assert_envelope, new_client


async def test_create_list_revoke(accounts: Accounts, auth_app: FastAPI, ctx: AuthContext) -> None:
    user = await accounts.create()
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    resp = await user.client.post(
        "/auth/api-keys", json={"name": "ci", "scopes": ["account:read"], "expires_at": expires}
    )
    assert resp.status_code == 201
    created = resp.json()
    assert set(created) == {"id", "name", "prefix", "key", "scopes", "expires_at", "created_at"}
    raw = created["key"]
    assert raw.startswith("sk_live_") and raw.startswith(created["prefix"])
    assert created["scopes"] == ["account:read"]

    listed = (await user.client.get("/auth/api-keys")).json()
    assert len(listed) == 1 and "key" not in listed[0]
    assert listed[0]["created_by_user_id"] == str(user.id) and listed[0]["owner_user_id"] == str(user.id)
    assert "last_used_at" not in listed[0]

    # Stored only as a keyed hash: neither the raw key nor its plain sha256 is in the table.
    async with ctx.db.engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT key_hash FROM auth.api_keys WHERE id = :i"), {"i": created["id"]})
        ).scalar()
    assert stored not in (raw, hashlib.sha256(raw.encode()).hexdigest())

    async with new_client(auth_app, headers={"Authorization": f"Bearer {raw}"}) as keyed:
        assert (await keyed.get("/users/me")).json()["id"] == str(user.id)
        # Scope enforcement: read-only key cannot write.
        assert_envelope(await keyed.patch("/users/me", json={"name": "x"}), 403, "auth.insufficient_scope")
        assert_envelope(
            await keyed.post("/auth/api-keys", json={"name": "y"}), 403, "auth.insufficient_scope"
        )
        listed = (await user.client.get("/auth/api-keys")).json()
        assert listed[0]["last_used_at"] is not None

        assert (await user.client.delete(f"/auth/api-keys/{created['id']}")).status_code == 204
        assert_envelope(await keyed.get("/users/me"), 401, "auth.credential_revoked")
    assert (await user.client.get("/auth/api-keys")).json() == []
    assert_envelope(await user.client.delete(f"/auth/api-keys/{created['id']}"), 404)


async def test_key_cannot_exceed_creator_scopes(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    key = await user.api_key(scopes=["keys:write", "account:read"])
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        assert_envelope(await keyed.post("/auth/api-keys", json={"name": "wider", "scopes": ["*"]}), 403)
        narrower = await keyed.post("/auth/api-keys", json={"name": "narrow", "scopes": ["account:read"]})
        assert narrower.status_code == 201


async def test_validation(accounts: Accounts) -> None:
    user = await accounts.create()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert_envelope(await user.client.post("/auth/api-keys", json={"name": "k", "expires_at": past}), 422)
    assert_envelope(await user.client.post("/auth/api-keys", json={"name": "k", "scopes": ["root"]}), 422)
    assert_envelope(await user.client.post("/auth/api-keys", json={"name": ""}), 422)
    naive = datetime.now() + timedelta(days=1)
    assert_envelope(
        await user.client.post("/auth/api-keys", json={"name": "k", "expires_at": naive.isoformat()}), 422
    )


async def test_expired_key(accounts: Accounts, auth_app: FastAPI, ctx: AuthContext) -> None:
    user = await accounts.create()
    key = await user.api_key()
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE auth.api_keys SET expires_at = now() - interval '1 s' WHERE created_by_user_id = :u"
            ),
            {"u": user.id},
        )
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:
        assert_envelope(await keyed.get("/users/me"), 401, "auth.credential_expired")


async def test_cross_user_keys_invisible(accounts: Accounts) -> None:
    alice, bob = await accounts.create("alice"), await accounts.create("bob")
    await alice.api_key()
    alice_key_id = (await alice.client.get("/auth/api-keys")).json()[0]["id"]
    assert (await bob.client.get("/auth/api-keys")).json() == []
    assert_envelope(await bob.client.delete(f"/auth/api-keys/{alice_key_id}"), 404)
    assert len((await alice.client.get("/auth/api-keys")).json()) == 1


async def test_unknown_and_garbage_bearer(auth_app: FastAPI) -> None:
    for value in ("sk_live_nope", "garbage", "a.b.c", "x" * 5000):
        async with new_client(auth_app, headers={"Authorization": f"Bearer {value}"}) as c:
            assert_envelope(await c.get("/users/me"), 401)
