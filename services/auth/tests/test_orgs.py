"""Orgs and members: every role rule, cross-org denial, and the last-owner invariant."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .support import Account, Accounts, assert_envelope, new_client


def slug() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"


async def make_org(owner: Account) -> str:
    s = slug()
    resp = await owner.client.post("/orgs", json={"name": "Acme", "slug": s, "description": "d"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["slug"] == s and body["tier"] == "free" and body["created_by"] == str(owner.id)
    return s


async def add(actor: Account, org: str, user: Account, role: str) -> httpx.Response:
    return await actor.client.post(f"/orgs/{org}/members", json={"user_id": str(user.id), "role": role})


@pytest.fixture
async def team(accounts: Accounts) -> dict[str, Account | str]:
    """An org with one user per role, plus an outsider."""
    owner = await accounts.create("owner")
    org = await make_org(owner)
    people: dict[str, Account | str] = {"org": org, "owner": owner}
    for role in ("admin", "member", "viewer"):
        person = await accounts.create(role)
        assert (await add(owner, org, person, role)).status_code == 201
        people[role] = person
    people["outsider"] = await accounts.create("outsider")
    return people


def who(team: dict[str, Account | str], role: str) -> Account:
    person = team[role]
    assert isinstance(person, Account)
    return person


async def test_create_list_get(accounts: Accounts) -> None:
    owner = await accounts.create()
    org = await make_org(owner)
    listed = (await owner.client.get("/orgs")).json()
    assert [o["slug"] for o in listed] == [org]
    members = (await owner.client.get(f"/orgs/{org}/members")).json()
    assert [(m["user_id"], m["role"]) for m in members] == [(str(owner.id), "owner")]
    assert_envelope(await owner.client.post("/orgs", json={"name": "x", "slug": org}), 409, "org.slug_taken")
    for bad in ("Upper", "-lead", "trail-", "sp ace", "x" * 65, ""):
        assert_envelope(await owner.client.post("/orgs", json={"name": "x", "slug": bad}), 422)


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
async def test_every_role_can_read(team: dict[str, Account | str], role: str) -> None:
    org = team["org"]
    client = who(team, role).client
    assert (await client.get(f"/orgs/{org}")).status_code == 200
    assert len((await client.get(f"/orgs/{org}/members")).json()) == 4
    assert [o["slug"] for o in (await client.get("/orgs")).json()] == [org]


async def test_outsider_sees_nothing(team: dict[str, Account | str]) -> None:
    org, outsider = team["org"], who(team, "outsider").client
    assert (await outsider.get("/orgs")).json() == []
    for method, path, body in [
        ("GET", f"/orgs/{org}", None),
        ("PATCH", f"/orgs/{org}", {"name": "pwned"}),
        ("DELETE", f"/orgs/{org}", None),
        ("GET", f"/orgs/{org}/members", None),
        ("POST", f"/orgs/{org}/members", {"user_id": str(who(team, "outsider").id), "role": "admin"}),
        ("PATCH", f"/orgs/{org}/members/{who(team, 'owner').id}", {"role": "viewer"}),
        ("DELETE", f"/orgs/{org}/members/{who(team, 'owner').id}", None),
    ]:
        resp = await outsider.request(method, path, json=body)
        assert_envelope(resp, 404, "resource.not_found")


@pytest.mark.parametrize(
    ("role", "status"), [("owner", 200), ("admin", 200), ("member", 403), ("viewer", 403)]
)
async def test_update_org_requires_admin(team: dict[str, Account | str], role: str, status: int) -> None:
    resp = await who(team, role).client.patch(f"/orgs/{team['org']}", json={"name": "Renamed"})
    assert resp.status_code == status, resp.text
    if status == 403:
        assert_envelope(resp, 403, "auth.insufficient_role")


@pytest.mark.parametrize(
    ("role", "status"), [("admin", 403), ("member", 403), ("viewer", 403), ("owner", 204)]
)
async def test_delete_org_requires_owner(team: dict[str, Account | str], role: str, status: int) -> None:
    org = team["org"]
    resp = await who(team, role).client.delete(f"/orgs/{org}")
    assert resp.status_code == status
    if status == 204:
        assert_envelope(await who(team, "admin").client.get(f"/orgs/{org}"), 404)
        # A deleted org's slug can be taken again.
        again = await who(team, "owner").client.post("/orgs", json={"name": "Again", "slug": org})
        assert again.status_code == 201


@pytest.mark.parametrize(
    ("actor", "status"), [("owner", 201), ("admin", 201), ("member", 403), ("viewer", 403)]
)
async def test_add_member_requires_admin(
    team: dict[str, Account | str], accounts: Accounts, actor: str, status: int
) -> None:
    newcomer = await accounts.create("new")
    resp = await add(who(team, actor), str(team["org"]), newcomer, "member")
    assert resp.status_code == status, resp.text


async def test_add_member_errors(team: dict[str, Account | str]) -> None:
    org, owner = str(team["org"]), who(team, "owner")
    assert_envelope(await add(owner, org, who(team, "member"), "viewer"), 409, "org.member_exists")
    ghost = await owner.client.post(
        f"/orgs/{org}/members", json={"user_id": str(uuid.uuid4()), "role": "viewer"}
    )
    assert_envelope(ghost, 404, "resource.not_found")
    # Owners are made by promotion, never added directly (spec: role is admin|member|viewer).
    assert_envelope(await add(owner, org, who(team, "outsider"), "owner"), 422)


async def test_role_changes_follow_the_hierarchy(team: dict[str, Account | str]) -> None:
    org = team["org"]
    owner, admin, member, viewer = (who(team, r) for r in ("owner", "admin", "member", "viewer"))

    async def set_role(actor: Account, target: Account, role: str) -> httpx.Response:
        return await actor.client.patch(f"/orgs/{org}/members/{target.id}", json={"role": role})

    # Members and viewers cannot change roles at all.
    assert_envelope(await set_role(member, viewer, "member"), 403, "auth.insufficient_role")
    assert_envelope(await set_role(viewer, viewer, "admin"), 403, "auth.insufficient_role")
    # Admins manage members and viewers, but cannot make owners or touch owners.
    ok = await set_role(admin, viewer, "member")
    assert ok.status_code == 200 and ok.json()["role"] == "member"
    assert_envelope(await set_role(admin, member, "owner"), 403, "auth.insufficient_role")
    assert_envelope(await set_role(admin, owner, "viewer"), 403, "auth.insufficient_role")
    # Owners can promote to owner; then there are two owners and one may step down.
    assert (await set_role(owner, admin, "owner")).json()["role"] == "owner"
    assert (await set_role(owner, owner, "admin")).json()["role"] == "admin"
    missing = await owner.client.patch(f"/orgs/{org}/members/{uuid.uuid4()}", json={"role": "viewer"})
    assert_envelope(missing, 404, "resource.not_found")
    assert_envelope(await set_role(owner, who(team, "outsider"), "viewer"), 404, "resource.not_found")


async def test_last_owner_cannot_leave_or_step_down(team: dict[str, Account | str]) -> None:
    org, owner = team["org"], who(team, "owner")
    demote = await owner.client.patch(f"/orgs/{org}/members/{owner.id}", json={"role": "admin"})
    assert_envelope(demote, 409, "org.last_owner")
    leave = await owner.client.delete(f"/orgs/{org}/members/{owner.id}")
    assert_envelope(leave, 409, "org.last_owner")
    assert_envelope(await owner.client.delete("/users/me"), 409, "org.last_owner")
    members = (await owner.client.get(f"/orgs/{org}/members")).json()
    assert {m["role"] for m in members if m["user_id"] == str(owner.id)} == {"owner"}


async def test_remove_members(team: dict[str, Account | str]) -> None:
    org = team["org"]
    owner, admin, member, viewer = (who(team, r) for r in ("owner", "admin", "member", "viewer"))
    # Anyone may leave; removing others needs admin, and never someone above you.
    assert_envelope(await member.client.delete(f"/orgs/{org}/members/{viewer.id}"), 403)
    assert_envelope(await admin.client.delete(f"/orgs/{org}/members/{owner.id}"), 403)
    assert (await viewer.client.delete(f"/orgs/{org}/members/{viewer.id}")).status_code == 204
    assert_envelope(await viewer.client.get(f"/orgs/{org}"), 404)
    assert (await admin.client.delete(f"/orgs/{org}/members/{member.id}")).status_code == 204
    assert_envelope(await admin.client.delete(f"/orgs/{org}/members/{member.id}"), 404)
    assert (await owner.client.delete(f"/orgs/{org}/members/{admin.id}")).status_code == 204
    assert [m["role"] for m in (await owner.client.get(f"/orgs/{org}/members")).json()] == ["owner"]


async def test_org_api_key_is_confined_to_its_org(accounts: Accounts, auth_app: object) -> None:
    owner = await accounts.create()
    org_a, org_b = await make_org(owner), await make_org(owner)
    key = await owner.api_key(org_slug=org_a)
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as keyed:  # type: ignore[arg-type]
        assert (await keyed.get(f"/orgs/{org_a}")).status_code == 200
        assert_envelope(await keyed.get(f"/orgs/{org_b}"), 404)
        assert [o["slug"] for o in (await keyed.get("/orgs")).json()] == [org_a]
        assert_envelope(await keyed.post("/orgs", json={"name": "n", "slug": slug()}), 403, "auth.forbidden")
    listed = (await owner.client.get("/auth/api-keys")).json()
    assert [k.get("owner_org_id") is not None for k in listed] == [True]
