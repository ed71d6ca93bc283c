"""The Octavus agent endpoints (`/api/agents…`) over the real catalog and auth apps: the shapes
@octavus/cli 2.0.0 parses (docs/octavus-wire.md), Bearer API keys only, project isolation, the
`error` key on every error, and the agent events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from parley_catalog.octavus.router import router as octavus_router
from parley_common import subjects
from parley_common.octavus import read_agent_dir
from parley_devstack.testing import subscribed

from .support import User, World, eventually

CORPUS = Path(__file__).parents[3] / "libs/common/tests/octavus_corpus/valid"
ENVELOPE = {"code", "message", "doc_url"}


@pytest.fixture(scope="module", autouse=True)
def _octavus_routes(catalog_app: FastAPI) -> None:
    """Until app.py includes the router (then this is a no-op)."""
    if not any(getattr(r, "path", "").startswith("/api/agents") for r in catalog_app.routes):
        catalog_app.include_router(octavus_router)


def definition(name: str = "cli-readme", slug: str | None = None) -> dict[str, Any]:
    body = read_agent_dir(CORPUS / name).model_dump(mode="json", exclude_none=True)
    if slug is not None:
        body["settings"]["slug"] = slug
    return body


def unique_slug(user: User) -> str:
    return f"support-{user.id.hex[:12]}"


def assert_octavus_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The envelope plus `error`, the only key @octavus/cli prints."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) >= ENVELOPE | {"error"}, body
    assert body["error"] == body["message"] and body["error"]
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


async def key_client(
    user: User, scopes: list[str] | None = None, org_slug: str | None = None
) -> httpx.AsyncClient:
    return await user.key_client(scopes or ["agents:read", "agents:write"], org_slug)


async def test_validate_a_valid_definition(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice, ["agents:read"])
    resp = await api.post("/api/agents/validate", json=definition("support-escalation"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"valid": True, "errors": [], "warnings": []}
    # A dry run: nothing was saved.
    assert (await api.get("/api/agents")).json() == {"agents": []}


async def test_validate_reports_each_issue_with_message_path_and_severity(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice, ["agents:read"])
    body = definition()
    body["protocol"] = body["protocol"].replace("prompt: user-message", "prompt: no-such-prompt")
    body["protocol"] += "\n  unknown-trigger:\n    Respond:\n      block: next-message\n"
    body["settings"]["format"] = "generation"
    resp = await api.post("/api/agents/validate", json=body)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["valid"] is False
    for issue in result["errors"] + result["warnings"]:
        assert set(issue) == {"message", "path", "severity"} and isinstance(issue["path"], str)
    assert {e["severity"] for e in result["errors"]} == {"error"}
    paths = {e["path"] for e in result["errors"]}
    assert "settings.format" in paths
    assert any(p.startswith("handlers.user-message") for p in paths), paths
    assert any(p.startswith("handlers.unknown-trigger") for p in paths), paths
    prompt_error = next(e for e in result["errors"] if "no-such-prompt" in e["message"])
    assert "(line " in prompt_error["message"]


async def test_create_get_list_and_patch(world: World, ctx: Any) -> None:
    alice = await world.user()
    api = await key_client(alice)
    slug = unique_slug(alice)
    body = definition(slug=slug)
    nc = await nats.connect(ctx.settings.nats_url)
    seen: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        seen.append(json.loads(msg.data))

    await nc.subscribe(f"{subjects.CATALOG_AGENT_EVENTS}.>", cb=collect)
    await subscribed(nc)
    try:
        created = await api.post("/api/agents", json=body)
        assert created.status_code == 201, created.text
        assert set(created.json()) == {"agentId", "message"}
        agent_id = created.json()["agentId"]

        by_id = await api.get(f"/api/agents/{agent_id}")
        assert by_id.status_code == 200, by_id.text
        assert by_id.json() == {**body, "id": agent_id}
        by_slug = await api.get(f"/api/agents/{slug}", params={"by": "slug"})
        assert by_slug.status_code == 200 and by_slug.json() == by_id.json()

        listed = (await api.get("/api/agents")).json()["agents"]
        assert [a["id"] for a in listed] == [agent_id]
        entry = listed[0]
        assert set(entry) == {
            "slug",
            "id",
            "name",
            "description",
            "format",
            "createdAt",
            "updatedAt",
            "projectId",
        }
        assert entry["slug"] == slug and entry["name"] == "Support Chat" and entry["format"] == "interactive"
        assert entry["description"] == body["settings"]["description"]
        assert entry["projectId"] == str(alice.id)

        # The same agent through the Kivox API, with the account's session.
        kivox = await alice.catalog.get(f"/agents/{agent_id}")
        assert kivox.status_code == 200, kivox.text
        assert kivox.json()["config"]["name"] == "Support Chat" and kivox.json()["status"] == "draft"

        changed = [{"name": p["name"], "content": p["content"] + "\nBe brief."} for p in body["prompts"]]
        # Sync sends protocol and prompts only; a settings change would be ignored.
        patched = await api.patch(
            f"/api/agents/{slug}",
            params={"by": "slug"},
            json={"protocol": body["protocol"], "prompts": changed},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json() == {"agentId": agent_id, "message": "Agent updated"}
        after = (await api.get(f"/api/agents/{agent_id}")).json()
        assert after["prompts"] == changed and after["settings"] == body["settings"]
        again = await api.patch(
            f"/api/agents/{slug}",
            params={"by": "slug"},
            json={"protocol": body["protocol"], "prompts": changed},
        )
        assert again.json() == {"agentId": agent_id, "message": "Agent unchanged"}
        assert len((await api.get("/api/agents")).json()["agents"]) == 1

        async def mine() -> list[dict[str, Any]] | None:
            events = [e for e in seen if e["agent_id"] == agent_id]
            return events if len(events) >= 2 else None

        events = await eventually(mine)
    finally:
        await nc.close()
    assert [(e["kind"], e["version"]) for e in events] == [("created", 1), ("updated", 2)]


async def test_description_is_absent_not_null_when_settings_have_none(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice)
    body = definition(slug=unique_slug(alice))
    del body["settings"]["description"]
    agent_id = (await api.post("/api/agents", json=body)).json()["agentId"]
    got = (await api.get(f"/api/agents/{agent_id}")).json()
    assert "description" not in got["settings"]
    assert (await api.get("/api/agents")).json()["agents"][0]["description"] is None


async def test_create_refuses_invalid_definitions_and_taken_slugs(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice)
    body = definition(slug=unique_slug(alice))
    broken = {**body, "protocol": body["protocol"].replace("system: system", "system: missing-prompt")}
    error = assert_octavus_error(await api.post("/api/agents", json=broken), 422, "request.validation_failed")
    assert "missing-prompt" in error["error"]
    assert all(set(e) == {"message", "path", "severity"} for e in error["params"]["errors"])
    bad_slug = definition(slug="Not A Slug")
    assert_octavus_error(await api.post("/api/agents", json=bad_slug), 422, "request.validation_failed")
    assert (await api.get("/api/agents")).json() == {"agents": []}

    assert (await api.post("/api/agents", json=body)).status_code == 201
    taken = assert_octavus_error(await api.post("/api/agents", json=body), 409, "resource.conflict")
    assert body["settings"]["slug"] in taken["error"]

    slug = body["settings"]["slug"]
    invalid_patch = await api.patch(f"/api/agents/{slug}?by=slug", json={"protocol": "handlers: ["})
    assert "YAML" in assert_octavus_error(invalid_patch, 422, "request.validation_failed")["error"]


async def test_unknown_agents_are_404_with_an_error(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice)
    for path in ("/api/agents/nope?by=slug", "/api/agents/nope", f"/api/agents/{alice.id}"):
        body = assert_octavus_error(await api.get(path), 404, "resource.not_found")
        assert body["error"] == "The agent was not found."
    assert_octavus_error(
        await api.patch("/api/agents/nope?by=slug", json={"protocol": "x: 1"}), 404, "resource.not_found"
    )
    # A Kivox (blueprint) agent is not an Octavus agent.
    blueprint_agent = await alice.create_agent()
    assert_octavus_error(await api.get(f"/api/agents/{blueprint_agent['id']}"), 404)


async def test_projects_are_isolated(world: World) -> None:
    alice, bob = await world.user("alice"), await world.user("bob")
    alice_api, bob_api = await key_client(alice), await key_client(bob)
    slug = unique_slug(alice)
    agent_id = (await alice_api.post("/api/agents", json=definition(slug=slug))).json()["agentId"]

    assert (await bob_api.get("/api/agents")).json() == {"agents": []}
    assert_octavus_error(await bob_api.get(f"/api/agents/{agent_id}"), 404)
    assert_octavus_error(await bob_api.get(f"/api/agents/{slug}?by=slug"), 404)
    assert_octavus_error(await bob_api.patch(f"/api/agents/{slug}?by=slug", json={"protocol": "x: 1"}), 404)
    # Bob may use the same slug in his own project.
    assert (await bob_api.post("/api/agents", json=definition(slug=slug))).status_code == 201
    assert (await alice_api.get(f"/api/agents/{slug}?by=slug")).json()["id"] == agent_id


async def test_an_org_key_works_in_the_org_project(world: World) -> None:
    owner = await world.user("owner")
    org_slug, org_id = await world.org(owner)
    api = await key_client(owner, org_slug=org_slug)
    slug = unique_slug(owner)
    agent_id = (await api.post("/api/agents", json=definition(slug=slug))).json()["agentId"]
    listed = (await api.get("/api/agents")).json()["agents"]
    assert [(a["id"], a["projectId"]) for a in listed] == [(agent_id, str(org_id))]
    kivox = (await owner.catalog.get(f"/orgs/{org_slug}/agents")).json()
    assert agent_id in [a["id"] for a in kivox["items"]]
    # The owner's personal key does not see the org's project.
    personal = await key_client(owner)
    assert (await personal.get("/api/agents")).json() == {"agents": []}


async def test_only_bearer_api_keys_with_the_scope_get_in(world: World) -> None:
    alice = await world.user()
    anonymous = world.catalog_client()
    for method, path in (("GET", "/api/agents"), ("POST", "/api/agents/validate"), ("POST", "/api/agents")):
        resp = await anonymous.request(method, path, json=definition())
        assert_octavus_error(resp, 401, "auth.unauthenticated")
    # The account's session cookie is not enough here.
    assert_octavus_error(await alice.catalog.get("/api/agents"), 401, "auth.unauthenticated")
    wrong = world.catalog_client(headers={"Authorization": "Bearer sk_live_not_a_real_key"})
    assert (await wrong.get("/api/agents")).status_code == 401
    assert "error" in (await wrong.get("/api/agents")).json()
    reader = await key_client(alice, ["agents:read"])
    assert_octavus_error(await reader.post("/api/agents", json=definition()), 403, "auth.insufficient_scope")
    other = await key_client(alice, ["conversations:read"])
    assert_octavus_error(await other.get("/api/agents"), 403, "auth.insufficient_scope")


async def test_bad_bodies_answer_4xx_with_an_error(world: World) -> None:
    alice = await world.user()
    api = await key_client(alice)
    no_protocol = {"settings": definition()["settings"], "prompts": []}
    for path in ("/api/agents/validate", "/api/agents"):
        assert_octavus_error(await api.post(path, json=no_protocol), 422, "request.validation_failed")
        assert_octavus_error(
            await api.post(path, json={**definition(), "settings": "slug"}), 422, "request.validation_failed"
        )
        assert_octavus_error(
            await api.post(path, json={**definition(), "prompts": [{"name": "x"}]}),
            422,
            "request.validation_failed",
        )
        malformed = await api.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert_octavus_error(malformed, 400, "request.malformed_json")
    slug = unique_slug(alice)
    assert (await api.post("/api/agents", json=definition(slug=slug))).status_code == 201
    assert_octavus_error(
        await api.patch(f"/api/agents/{slug}?by=slug", json={"prompts": []}), 422, "request.validation_failed"
    )
    assert_octavus_error(await api.get(f"/api/agents/{slug}?by=name"), 422, "request.validation_failed")
