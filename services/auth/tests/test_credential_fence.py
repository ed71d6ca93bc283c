"""Each credential kind reaches only what it was minted for (docs/auth.md, "Which credential
reaches what"): an organization's API key never reaches the account, personal keys or another
org; the login email moves only with a browser session or the current password; logging out
everywhere needs the account scope; client tokens reach no HTTP route.
"""

from __future__ import annotations

import asyncio
import email
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from parley_auth.context import AuthContext

from .support import Account, Accounts, assert_envelope, mail_files, new_client, unique_email


async def make_key(owner: Account, **body: Any) -> tuple[str, str]:
    """A new API key of `owner`: (its id, the raw key)."""
    resp = await owner.client.post("/auth/api-keys", json={"name": "k", **body})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"]), str(resp.json()["key"])


async def make_org(owner: Account) -> str:
    slug = f"fence-{uuid.uuid4().hex[:10]}"
    resp = await owner.client.post("/orgs", json={"name": "Fence", "slug": slug})
    assert resp.status_code == 201, resp.text
    return slug


def bearer(app: FastAPI, credential: str) -> httpx.AsyncClient:
    return new_client(app, headers={"Authorization": f"Bearer {credential}"})


async def wait_for_mail(directory: Path, to: str, subject_part: str, timeout: float = 5.0) -> str:
    """The body of the first mail to `to` whose subject contains `subject_part`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in mail_files(directory):
            msg = email.message_from_bytes(path.read_bytes())
            if msg["To"] == to and subject_part in str(msg["Subject"]):
                payload = msg.get_payload(decode=True)
                assert isinstance(payload, bytes)
                return payload.decode()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail to {to} about {subject_part!r} in {directory}")


async def test_an_org_key_never_reaches_the_account(accounts: Accounts, auth_app: FastAPI) -> None:
    owner = await accounts.create("owner")
    org_a = await make_org(owner)
    _, key_a = await make_key(owner, org_slug=org_a)
    async with bearer(auth_app, key_a) as org_key:
        for method, path, body in (
            ("GET", "/users/me", None),
            ("PATCH", "/users/me", {"name": "Mallory"}),
            ("PATCH", "/users/me/email", {"email": unique_email("mallory")}),
            ("PATCH", "/users/me/email", {"email": unique_email("mallory"), "current_password": "x" * 8}),
            ("DELETE", "/users/me", None),
            ("DELETE", "/auth/sessions", None),
            ("POST", "/orgs", {"name": "n", "slug": f"x-{uuid.uuid4().hex[:8]}"}),
        ):
            resp = await org_key.request(method, path, json=body)
            assert_envelope(resp, 403, "auth.forbidden")
    # Nothing happened to the account: same email, same name, the cookie session still works.
    me = await owner.client.get("/users/me")
    assert me.status_code == 200 and me.json()["email"] == owner.email and me.json()["name"] == "owner"


async def test_an_org_key_sees_and_revokes_only_its_org_keys(accounts: Accounts, auth_app: FastAPI) -> None:
    owner = await accounts.create("owner")
    org_a, org_b = await make_org(owner), await make_org(owner)
    personal_id, personal = await make_key(owner)
    b_id, key_b = await make_key(owner, org_slug=org_b)
    a_id, key_a = await make_key(owner, org_slug=org_a)
    a2_id, key_a2 = await make_key(owner, org_slug=org_a)
    async with bearer(auth_app, key_a) as org_key:
        listed = await org_key.get("/auth/api-keys")
        assert listed.status_code == 200
        assert sorted(k["id"] for k in listed.json()) == sorted([a_id, a2_id])
        # The user's personal key and org B's key are invisible, so not revocable either.
        for other in (personal_id, b_id):
            assert_envelope(await org_key.delete(f"/auth/api-keys/{other}"), 404, "resource.not_found")
        # A new key made with an org key belongs to that org; another org's slug is 404.
        made = await org_key.post("/auth/api-keys", json={"name": "child"})
        assert made.status_code == 201, made.text
        assert_envelope(
            await org_key.post("/auth/api-keys", json={"name": "x", "org_slug": org_b}),
            404,
            "resource.not_found",
        )
        # Its own org's keys it manages.
        assert (await org_key.delete(f"/auth/api-keys/{a2_id}")).status_code == 204
    for survivor in (personal, key_b):
        async with bearer(auth_app, survivor) as still:
            assert (await still.get("/orgs")).status_code == 200
    async with bearer(auth_app, key_a2) as revoked:
        assert_envelope(await revoked.get("/orgs"), 401, "auth.credential_revoked")
    mine = {k["id"]: k for k in (await owner.client.get("/auth/api-keys")).json()}
    assert mine[made.json()["id"]]["owner_org_id"] == mine[a_id]["owner_org_id"]


async def test_an_org_key_stays_in_its_org(accounts: Accounts, auth_app: FastAPI) -> None:
    owner, member = await accounts.create("owner"), await accounts.create("member")
    org_a, org_b = await make_org(owner), await make_org(owner)
    resp = await owner.client.post(
        f"/orgs/{org_b}/members", json={"user_id": str(member.id), "role": "member"}
    )
    assert resp.status_code == 201, resp.text
    _, key_a = await make_key(owner, org_slug=org_a)
    async with bearer(auth_app, key_a) as org_key:
        assert [o["slug"] for o in (await org_key.get("/orgs")).json()] == [org_a]
        for method, path, body in (
            ("GET", f"/orgs/{org_b}", None),
            ("PATCH", f"/orgs/{org_b}", {"name": "taken"}),
            ("DELETE", f"/orgs/{org_b}", None),
            ("GET", f"/orgs/{org_b}/members", None),
            ("POST", f"/orgs/{org_b}/members", {"user_id": str(uuid.uuid4()), "role": "viewer"}),
            ("PATCH", f"/orgs/{org_b}/members/{member.id}", {"role": "admin"}),
            ("DELETE", f"/orgs/{org_b}/members/{member.id}", None),
        ):
            assert_envelope(await org_key.request(method, path, json=body), 404, "resource.not_found")
        assert (await org_key.get(f"/orgs/{org_a}/members")).status_code == 200
    members = (await owner.client.get(f"/orgs/{org_b}/members")).json()
    assert {m["user_id"]: m["role"] for m in members}[str(member.id)] == "member"
    assert (await owner.client.get(f"/orgs/{org_b}")).json()["name"] == "Fence"


async def test_an_org_key_of_a_demoted_admin_makes_no_keys(accounts: Accounts, auth_app: FastAPI) -> None:
    owner, admin = await accounts.create("owner"), await accounts.create("admin")
    org = await make_org(owner)
    await owner.client.post(f"/orgs/{org}/members", json={"user_id": str(admin.id), "role": "admin"})
    _, key = await make_key(admin, org_slug=org)
    demoted = await owner.client.patch(f"/orgs/{org}/members/{admin.id}", json={"role": "member"})
    assert demoted.status_code == 200, demoted.text
    async with bearer(auth_app, key) as org_key:
        resp = await org_key.post("/auth/api-keys", json={"name": "escalate"})
        assert_envelope(resp, 403, "auth.insufficient_role")


async def test_login_email_moves_with_a_session_or_the_password(
    accounts: Accounts, auth_app: FastAPI, ctx: AuthContext
) -> None:
    user = await accounts.create("mover")
    _, key = await make_key(user)
    target = unique_email("moved")
    async with bearer(auth_app, key) as keyed:
        denied = await keyed.patch("/users/me/email", json={"email": target})
        assert_envelope(denied, 403, "auth.current_password_required")
        wrong = await keyed.patch(
            "/users/me/email", json={"email": target, "current_password": "not it at all"}
        )
        assert_envelope(wrong, 403, "auth.current_password_incorrect")
        assert (await user.client.get("/users/me")).json()["email"] == user.email
        moved = await keyed.patch(
            "/users/me/email", json={"email": target, "current_password": user.password}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["email"] == target
    # The old address hears of it (through the outbox and the mail sink).
    notice = await wait_for_mail(ctx.settings.auth_mail_dir, user.email, "login email was changed")
    assert target in notice
    # A browser session moves it without the password; a wrong one given is still refused.
    again = unique_email("again")
    wrong = await user.client.patch("/users/me/email", json={"email": again, "current_password": "nope nope"})
    assert_envelope(wrong, 403, "auth.current_password_incorrect")
    resp = await user.client.patch("/users/me/email", json={"email": again})
    assert resp.status_code == 200 and resp.json()["email"] == again
    assert again in await wait_for_mail(ctx.settings.auth_mail_dir, target, "login email was changed")


async def test_password_guesses_through_email_change_are_rate_limited(
    accounts: Accounts, auth_app: FastAPI, ctx: AuthContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await accounts.create("guessed")
    _, key = await make_key(user)
    monkeypatch.setattr(ctx.settings, "auth_rate_login_account", "3/minute")
    body = {"email": unique_email("x"), "current_password": "guess guess"}
    async with bearer(auth_app, key) as keyed:
        codes = [(await keyed.patch("/users/me/email", json=body)).json()["code"] for _ in range(4)]
    assert codes == ["auth.current_password_incorrect"] * 3 + ["rate_limit.exceeded"]


async def test_logout_everywhere_needs_the_account_scope(accounts: Accounts, auth_app: FastAPI) -> None:
    user = await accounts.create()
    _, reader = await make_key(user, scopes=["agents:read"])
    _, writer = await make_key(user, scopes=["account:write"])
    async with bearer(auth_app, reader) as keyed:
        assert_envelope(await keyed.delete("/auth/sessions"), 403, "auth.insufficient_scope")
    assert (await user.client.get("/users/me")).status_code == 200
    async with bearer(auth_app, writer) as keyed:
        assert (await keyed.delete("/auth/sessions")).status_code == 204
    assert_envelope(await user.client.get("/users/me"), 401, "auth.credential_revoked")


PUBLIC = {
    ("POST", "/auth/signup"),
    ("POST", "/auth/sessions"),
    ("POST", "/auth/password/recover"),
    ("POST", "/auth/password/reset"),
    ("GET", "/version"),
    ("GET", "/api/version"),
}


async def test_client_tokens_reach_no_auth_route(accounts: Accounts, auth_app: FastAPI) -> None:
    """Every route of the auth API that takes a credential refuses a client token."""
    user = await accounts.create()
    org = await make_org(user)
    _, key = await make_key(user)
    async with bearer(auth_app, key) as keyed:
        token = (await keyed.post("/chat/tokens", json={"workflow_id": "wf"})).json()["token"]
    key_id = (await user.client.get("/auth/api-keys")).json()[0]["id"]
    values = {"{orgSlug}": org, "{userID}": str(user.id), "{keyID}": key_id}
    paths = auth_app.openapi()["paths"]
    checked = 0
    async with bearer(auth_app, token) as end_user:
        for template, operations in paths.items():
            path = template
            for name, value in values.items():
                path = path.replace(name, value)
            for method in operations:
                if (method.upper(), template) in PUBLIC:
                    continue
                resp = await end_user.request(method.upper(), path, json={})
                assert resp.status_code in (401, 403), (method, path, resp.status_code, resp.text)
                assert resp.json()["code"] in ("auth.forbidden", "auth.unauthenticated"), resp.text
                checked += 1
    assert checked >= 20
    # The account is untouched.
    assert (await user.client.get("/users/me")).status_code == 200
    assert (await user.client.get(f"/orgs/{org}")).status_code == 200


async def test_org_keys_die_with_their_creators_seat_and_with_the_org(
    accounts: Accounts, auth_app: FastAPI
) -> None:
    owner, admin, other = (
        await accounts.create("owner"),
        await accounts.create("admin"),
        await accounts.create(),
    )
    org = await make_org(owner)
    for user in (admin, other):
        resp = await owner.client.post(
            f"/orgs/{org}/members", json={"user_id": str(user.id), "role": "admin"}
        )
        assert resp.status_code == 201, resp.text
    _, admin_key = await make_key(admin, org_slug=org)
    _, other_key = await make_key(other, org_slug=org)
    _, owner_key = await make_key(owner, org_slug=org)
    _, admin_personal = await make_key(admin)
    assert (await owner.client.delete(f"/orgs/{org}/members/{admin.id}")).status_code == 204
    async with bearer(auth_app, admin_key) as removed:
        assert_envelope(await removed.get(f"/orgs/{org}"), 401, "auth.credential_revoked")
    # Leaving, too, takes one's org keys along.
    assert (await other.client.delete(f"/orgs/{org}/members/{other.id}")).status_code == 204
    async with bearer(auth_app, other_key) as left:
        assert_envelope(await left.get(f"/orgs/{org}"), 401, "auth.credential_revoked")
    # The member's personal key and the other members' org keys are untouched ...
    async with bearer(auth_app, admin_personal) as still:
        assert (await still.get("/users/me")).status_code == 200
    async with bearer(auth_app, owner_key) as still:
        assert (await still.get(f"/orgs/{org}")).status_code == 200
    # ... until the org itself is deleted.
    assert (await owner.client.delete(f"/orgs/{org}")).status_code == 204
    async with bearer(auth_app, owner_key) as gone:
        assert_envelope(await gone.get("/orgs"), 401, "auth.credential_revoked")
