"""Sign-up, login, logout, profile, email change, soft delete, password recovery and reset."""

from __future__ import annotations

import asyncio
import email
import re
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from parley_auth.context import AuthContext
from parley_auth.settings import AuthSettings

from .support import Accounts, assert_envelope, mail_files, new_client, unique_email


async def test_signup_sets_session_cookie_and_returns_expiry(anon: httpx.AsyncClient) -> None:
    resp = await anon.post(
        "/auth/signup", json={"email": unique_email(), "password": "long enough pw", "name": "Ann"}
    )
    assert resp.status_code == 201
    assert set(resp.json()) == {"expires_at"}
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("kivox_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # served over plain http here
    me = await anon.get("/users/me")
    assert me.status_code == 200
    assert set(me.json()) >= {"id", "email", "name", "created_at", "updated_at"}


async def test_cookie_is_secure_over_tls(auth_app: FastAPI) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=auth_app), base_url="https://testserver"
    ) as client:
        resp = await client.post(
            "/auth/signup", json={"email": unique_email(), "password": "long enough pw", "name": "Tls"}
        )
        assert resp.status_code == 201
        assert "Secure" in resp.headers["set-cookie"]


async def test_signup_duplicate_email_is_conflict_case_insensitive(
    accounts: Accounts, anon: httpx.AsyncClient
) -> None:
    user = await accounts.create()
    resp = await anon.post(
        "/auth/signup", json={"email": user.email.upper(), "password": "another password", "name": "Dup"}
    )
    assert_envelope(resp, 409, "auth.email_taken")


async def test_login_and_wrong_password(accounts: Accounts, anon: httpx.AsyncClient) -> None:
    user = await accounts.create()
    bad = await anon.post("/auth/sessions", json={"email": user.email, "password": "wrong password"})
    assert_envelope(bad, 401, "auth.invalid_credentials")
    unknown = await anon.post("/auth/sessions", json={"email": unique_email(), "password": "whatever pw"})
    assert_envelope(unknown, 401, "auth.invalid_credentials")
    ok = await anon.post("/auth/sessions", json={"email": user.email, "password": user.password})
    assert ok.status_code == 201
    assert (await anon.get("/users/me")).json()["id"] == str(user.id)


async def test_logout_current_session_only(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    async with new_client(auth_app) as second:
        await second.post("/auth/sessions", json={"email": user.email, "password": user.password})
        assert (await second.get("/users/me")).status_code == 200
        resp = await user.client.delete("/auth/sessions/me")
        assert resp.status_code == 204
        assert 'kivox_session=""' in resp.headers["set-cookie"] or "Max-Age=0" in resp.headers["set-cookie"]
        assert_envelope(await user.client.get("/users/me"), 401)
        assert (await second.get("/users/me")).status_code == 200


async def test_logout_all_sessions(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    async with new_client(auth_app) as second:
        await second.post("/auth/sessions", json={"email": user.email, "password": user.password})
        assert (await user.client.delete("/auth/sessions")).status_code == 204
        assert_envelope(await second.get("/users/me"), 401, "auth.credential_revoked")


async def test_revoked_session_cookie_replayed(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    token = user.client.cookies["kivox_session"]
    await user.client.delete("/auth/sessions/me")
    async with new_client(auth_app, cookies={"kivox_session": token}) as replay:
        assert_envelope(await replay.get("/users/me"), 401, "auth.credential_revoked")
    async with new_client(auth_app, headers={"Authorization": f"Bearer {token}"}) as replay:
        assert_envelope(await replay.get("/users/me"), 401, "auth.credential_revoked")


async def test_expired_session(accounts: Accounts, ctx: AuthContext) -> None:
    user = await accounts.create()
    async with ctx.db.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE auth.sessions SET expires_at = now() - interval '1 second' WHERE user_id = :u"),
            {"u": user.id},
        )
    assert_envelope(await user.client.get("/users/me"), 401, "auth.credential_expired")


async def test_update_profile_and_email(accounts: Accounts) -> None:
    user = await accounts.create()
    other = await accounts.create()
    resp = await user.client.patch(
        "/users/me", json={"name": "  New Name ", "avatar_url": "https://cdn.example.com/a.png"}
    )
    assert resp.status_code == 200
    assert resp.json()["name"] == "New Name"
    assert resp.json()["avatar_url"] == "https://cdn.example.com/a.png"
    assert_envelope(await user.client.patch("/users/me", json={"avatar_url": "not a url"}), 422)
    assert_envelope(
        await user.client.patch("/users/me/email", json={"email": other.email}), 409, "auth.email_taken"
    )
    new = unique_email("moved")
    resp = await user.client.patch("/users/me/email", json={"email": new})
    assert resp.status_code == 200 and resp.json()["email"] == new


async def test_soft_delete_revokes_everything_and_frees_email(
    accounts: Accounts, anon: httpx.AsyncClient
) -> None:
    user = await accounts.create()
    key = await user.api_key()
    assert (await user.client.delete("/users/me")).status_code == 204
    assert_envelope(await user.client.get("/users/me"), 401)
    async with httpx.AsyncClient(
        transport=anon._transport, base_url="http://testserver", headers={"Authorization": f"Bearer {key}"}
    ) as keyed:
        assert_envelope(await keyed.get("/users/me"), 401)
    login = await anon.post("/auth/sessions", json={"email": user.email, "password": user.password})
    assert_envelope(login, 401, "auth.invalid_credentials")
    again = await anon.post(
        "/auth/signup", json={"email": user.email, "password": "fresh password", "name": "B"}
    )
    assert again.status_code == 201


async def _wait_for_mail(directory: Path, to: str, timeout: float = 5.0) -> email.message.Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in mail_files(directory):
            msg = email.message_from_bytes(path.read_bytes())
            if msg["To"] == to:
                return msg
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail to {to} in {directory}")


async def test_password_recovery_and_single_use_reset(
    accounts: Accounts, anon: httpx.AsyncClient, auth_settings: AuthSettings, auth_app: FastAPI
) -> None:
    user = await accounts.create()
    async with new_client(auth_app) as other_session:
        await other_session.post("/auth/sessions", json={"email": user.email, "password": user.password})
        unknown = await anon.post("/auth/password/recover", json={"email": unique_email("nobody")})
        assert unknown.status_code == 204 and unknown.content == b""
        resp = await anon.post("/auth/password/recover", json={"email": user.email})
        assert resp.status_code == 204
        mail = await _wait_for_mail(auth_settings.auth_mail_dir, user.email)
        body = mail.get_payload(decode=True)
        assert isinstance(body, bytes)
        token = re.search(r"token=([\w-]+)", body.decode()).group(1)  # type: ignore[union-attr]

        reset = await anon.post("/auth/password/reset", json={"token": token, "password": "brand new secret"})
        assert reset.status_code == 204
        # All sessions are revoked, including ones opened before the reset.
        assert_envelope(await user.client.get("/users/me"), 401)
        assert_envelope(await other_session.get("/users/me"), 401)
        # Single use.
        again = await anon.post("/auth/password/reset", json={"token": token, "password": "another secret"})
        assert_envelope(again, 400, "auth.reset_token_invalid")
        old = await anon.post("/auth/sessions", json={"email": user.email, "password": user.password})
        assert_envelope(old, 401)
        new = await anon.post("/auth/sessions", json={"email": user.email, "password": "brand new secret"})
        assert new.status_code == 201


async def test_reset_with_bogus_or_expired_token(
    accounts: Accounts, anon: httpx.AsyncClient, ctx: AuthContext
) -> None:
    assert_envelope(
        await anon.post("/auth/password/reset", json={"token": "bogus", "password": "long enough"}),
        400,
        "auth.reset_token_invalid",
    )
    user = await accounts.create()
    async with ctx.db.sessions() as db:
        from parley_auth.accounts import service

        await service.request_password_reset(db, ctx.settings, user.email)
        await db.commit()
    from sqlalchemy import text

    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE auth.password_reset_tokens SET expires_at = now() - interval '1 s' WHERE user_id = :u"
            ),
            {"u": user.id},
        )
    # The token itself is only in the mail; expiry is checked before anything else is looked at.
    msg = await _wait_for_mail(ctx.settings.auth_mail_dir, user.email)
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    token = re.search(r"token=([\w-]+)", payload.decode()).group(1)  # type: ignore[union-attr]
    resp = await anon.post("/auth/password/reset", json={"token": token, "password": "long enough"})
    assert_envelope(resp, 400, "auth.reset_token_invalid")
