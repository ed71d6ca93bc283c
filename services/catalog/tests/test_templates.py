"""Templates over HTTP: the spec's operations, role rules, cross-tenant denial, lists and search."""

from __future__ import annotations

import uuid

from .support import World, assert_error, valid_blueprint

TEMPLATE_KEYS = {"id", "name", "config", "blueprint", "created_at", "updated_at"}


async def test_user_template_lifecycle(world: World) -> None:
    alice = await world.user()
    resp = await alice.catalog.post(
        "/users/me/templates",
        json={"name": "Greeter", "description": "Says hello", "blueprint": valid_blueprint()},
    )
    assert resp.status_code == 201, resp.text
    template = resp.json()
    assert set(template) >= TEMPLATE_KEYS and template["owner_user_id"] == str(alice.id)
    assert template["config"] == {"name": "Greeter", "description": "Says hello"}  # defaults from the name
    path = f"/templates/{template['id']}"
    assert (await alice.catalog.get(path)).json() == template
    patched = await alice.catalog.patch(path, json={"name": "Welcomer", "description": None})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Welcomer" and "description" not in patched.json()
    assert patched.json()["blueprint"] == template["blueprint"]
    kept = await alice.catalog.patch(path, json={"name": None, "config": {"name": "cfg"}})
    assert kept.json()["name"] == "Welcomer" and kept.json()["config"] == {"name": "cfg"}
    assert (await alice.catalog.delete(path)).status_code == 204
    assert_error(await alice.catalog.get(path), 404, "resource.not_found")
    assert (await alice.catalog.get("/users/me/templates")).json()["total"] == 0
    for body in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "ok", "blueprint": {"entries": "no"}}):
        assert_error(
            await alice.catalog.post("/users/me/templates", json=body), 422, "request.validation_failed"
        )


async def test_template_roles_and_tenancy(world: World) -> None:
    owner, admin, member, viewer, outsider = [
        await world.user(t) for t in ("owner", "admin", "member", "viewer", "outsider")
    ]
    slug, org_id = await world.org(owner, {"admin": admin, "member": member, "viewer": viewer})
    assert_error(
        await viewer.catalog.post(f"/orgs/{slug}/templates", json={"name": "v"}),
        403,
        "auth.insufficient_role",
    )
    made = await member.catalog.post(f"/orgs/{slug}/templates", json={"name": "Org template"})
    assert made.status_code == 201 and made.json()["owner_org_id"] == str(org_id)
    path = f"/templates/{made.json()['id']}"
    for user in (viewer, member, admin, owner):
        assert (await user.catalog.get(path)).status_code == 200
        assert (await user.catalog.get(f"/orgs/{slug}/templates")).json()["total"] == 1
    assert_error(await viewer.catalog.patch(path, json={"name": "x"}), 403, "auth.insufficient_role")
    assert (await member.catalog.patch(path, json={"name": "renamed"})).status_code == 200
    assert_error(await member.catalog.delete(path), 403, "auth.insufficient_role")
    for resp in (
        await outsider.catalog.get(path),
        await outsider.catalog.patch(path, json={"name": "x"}),
        await outsider.catalog.delete(path),
        await outsider.catalog.get(f"/orgs/{slug}/templates"),
        await outsider.catalog.post(f"/orgs/{slug}/templates", json={"name": "x"}),
    ):
        assert_error(resp, 404, "resource.not_found")
    assert (await admin.catalog.delete(path)).status_code == 204
    # A user's own templates are that user's alone, whatever their org roles.
    personal = await owner.catalog.post("/users/me/templates", json={"name": "mine"})
    assert_error(await admin.catalog.get(f"/templates/{personal.json()['id']}"), 404)
    assert_error(await owner.catalog.get(f"/templates/{uuid.uuid4()}"), 404)


async def test_template_lists_page_and_search(world: World) -> None:
    alice = await world.user()
    for name, description in (
        ("Hotel concierge", "Books rooms"),
        ("Dentist", "Books appointments"),
        ("Quiz", None),
    ):
        body = {"name": name} | ({"description": description} if description else {})
        assert (await alice.catalog.post("/users/me/templates", json=body)).status_code == 201
    page = (await alice.catalog.get("/users/me/templates", params={"limit": 2, "page": 2})).json()
    assert page["total"] == 3 and [t["name"] for t in page["items"]] == ["Hotel concierge"]
    found = (await alice.catalog.get("/users/me/templates", params={"search": "books"})).json()
    assert {t["name"] for t in found["items"]} == {"Hotel concierge", "Dentist"} and found["total"] == 2
    assert_error(await alice.catalog.get("/users/me/templates", params={"limit": 101}), 422)
