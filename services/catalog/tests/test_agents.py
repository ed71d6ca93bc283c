"""Agents over HTTP: the spec's operations, role rules, cross-tenant denial, scopes, events."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import nats
from fastapi import FastAPI

from parley_catalog.agents import events
from parley_common import subjects
from parley_common.catalog_contract import AgentEvent, AgentEventKind
from parley_devstack.testing import subscribed

from .support import User, World, assert_error, eventually, unique, valid_blueprint

AGENT_KEYS = {"id", "config", "secrets", "blueprint", "status", "created_at", "updated_at"}


async def test_user_agent_lifecycle(world: World) -> None:
    alice = await world.user("alice")
    resp = await alice.catalog.post(
        "/users/me/agents",
        json={
            "config": {"name": "Support bot", "description": "Answers billing questions", "language": "es"}
        },
    )
    assert resp.status_code == 201, resp.text
    agent = resp.json()
    assert set(agent) >= AGENT_KEYS
    assert agent["owner_user_id"] == str(alice.id) and "owner_org_id" not in agent
    assert agent["status"] == "draft" and agent["secrets"] == []
    assert agent["blueprint"] == {"version": "1", "entries": []}
    assert agent["config"] == {
        "name": "Support bot",
        "description": "Answers billing questions",
        "language": "es",
    }

    got = await alice.catalog.get(f"/agents/{agent['id']}")
    assert got.status_code == 200 and got.json() == agent

    patched = await alice.catalog.patch(
        f"/agents/{agent['id']}", json={"config": {"name": "Renamed"}, "blueprint": valid_blueprint()}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"] == {"name": "Renamed"}  # config is replaced as a whole
    assert patched.json()["blueprint"]["entries"][0]["name"] == "main"
    assert patched.json()["updated_at"] >= agent["updated_at"]

    live = await alice.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
    assert live.status_code == 200 and live.json()["status"] == "live"

    assert (await alice.catalog.delete(f"/agents/{agent['id']}")).status_code == 204
    assert_error(await alice.catalog.get(f"/agents/{agent['id']}"), 404, "resource.not_found")
    assert_error(await alice.catalog.delete(f"/agents/{agent['id']}"), 404, "resource.not_found")
    listed = await alice.catalog.get("/users/me/agents")
    assert listed.json()["items"] == [] and listed.json()["total"] == 0


async def test_create_defaults_and_empty_patch(world: World) -> None:
    alice = await world.user()
    resp = await alice.catalog.post("/users/me/agents", json={})
    assert resp.status_code == 201, resp.text
    agent = resp.json()
    assert agent["config"] == {"name": "Untitled agent"}
    same = await alice.catalog.patch(f"/agents/{agent['id']}", json={})
    assert same.status_code == 200 and same.json()["updated_at"] == agent["updated_at"]


async def test_invalid_bodies_are_422(world: World) -> None:
    alice = await world.user()
    cases: list[Any] = [
        {"config": {"name": ""}},
        {"config": {"description": "no name"}},
        {"config": {"name": "x", "llm_engine": "gpt-9000"}},
        {"secrets": [{"key": "1bad", "value": "v"}]},
        {"secrets": [{"key": "A", "value": "v"}, {"key": "A", "value": "w"}]},
        {"blueprint": {"entries": [{"name": "m", "workflow": {"nodes": [{"type": "X"}], "edges": []}}]}},
        {"template_id": "not-a-uuid"},
        [],
    ]
    for body in cases:
        assert_error(
            await alice.catalog.post("/users/me/agents", json=body), 422, "request.validation_failed"
        )
    bad_json = await alice.catalog.post(
        "/users/me/agents", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 400, "request.malformed_json")
    assert_error(await alice.catalog.get("/agents/not-a-uuid"), 422, "request.validation_failed")


async def test_unauthenticated_and_unknown_credentials(world: World) -> None:
    anon = world.catalog_client()
    assert_error(await anon.get("/users/me/agents"), 401, "auth.unauthenticated")
    assert_error(await anon.get(f"/agents/{uuid.uuid4()}"), 401, "auth.unauthenticated")
    bogus = world.catalog_client(headers={"Authorization": "Bearer sk_live_nope"})
    assert_error(await bogus.get("/users/me/agents"), 401, "auth.unauthenticated")


async def test_other_users_agent_is_404_everywhere(world: World) -> None:
    alice, mallory = await world.user("alice"), await world.user("mallory")
    agent = await alice.create_agent()
    path = f"/agents/{agent['id']}"
    assert_error(await mallory.catalog.get(path), 404, "resource.not_found")
    assert_error(await mallory.catalog.patch(path, json={"config": {"name": "x"}}), 404)
    assert_error(await mallory.catalog.delete(path), 404)
    assert_error(await mallory.catalog.patch(f"{path}/status", json={"status": "live"}), 404)
    assert_error(await mallory.catalog.post(f"{path}/lint", json={}), 404)
    assert_error(await mallory.catalog.get(f"{path}/conversations"), 404)
    assert_error(await mallory.catalog.get(f"{path}/tools"), 404)
    assert (await mallory.catalog.get("/users/me/agents")).json()["total"] == 0
    # Unknown ids read exactly the same as other people's.
    unknown = await mallory.catalog.get(f"/agents/{uuid.uuid4()}")
    assert unknown.json() == (await mallory.catalog.get(path)).json()


async def org_with_roles(world: World) -> tuple[str, dict[str, User]]:
    owner, admin, member, viewer = [await world.user(r) for r in ("owner", "admin", "member", "viewer")]
    slug, _ = await world.org(owner, {"admin": admin, "member": member, "viewer": viewer})
    return slug, {"owner": owner, "admin": admin, "member": member, "viewer": viewer}


async def test_org_role_rules(world: World) -> None:
    slug, users = await org_with_roles(world)
    outsider = await world.user("outsider")
    # create: member+
    assert_error(
        await users["viewer"].catalog.post(f"/orgs/{slug}/agents", json={}), 403, "auth.insufficient_role"
    )
    agent = await users["member"].create_agent(f"/orgs/{slug}/agents")
    assert "owner_user_id" not in agent and agent["owner_org_id"]
    path = f"/agents/{agent['id']}"
    # list and get: viewer+
    for role in ("viewer", "member", "admin", "owner"):
        listed = await users[role].catalog.get(f"/orgs/{slug}/agents")
        assert listed.status_code == 200 and [a["id"] for a in listed.json()["items"]] == [agent["id"]]
        assert (await users[role].catalog.get(path)).status_code == 200
        assert (await users[role].catalog.post(f"{path}/lint", json={})).status_code == 200
    # patch: member+
    assert_error(await users["viewer"].catalog.patch(path, json={"config": {"name": "v"}}), 403)
    assert (await users["member"].catalog.patch(path, json={"config": {"name": "m"}})).status_code == 200
    # status and delete: admin+
    for role in ("viewer", "member"):
        denied = await users[role].catalog.patch(f"{path}/status", json={"status": "archived"})
        assert_error(denied, 403, "auth.insufficient_role")
        assert_error(await users[role].catalog.delete(path), 403, "auth.insufficient_role")
    assert (
        await users["admin"].catalog.patch(f"{path}/status", json={"status": "archived"})
    ).status_code == 200
    # outsiders: 404 for the org and for the agent
    assert_error(await outsider.catalog.get(f"/orgs/{slug}/agents"), 404, "resource.not_found")
    assert_error(await outsider.catalog.post(f"/orgs/{slug}/agents", json={}), 404, "resource.not_found")
    assert_error(await outsider.catalog.get(path), 404, "resource.not_found")
    assert (await users["owner"].catalog.delete(path)).status_code == 204


async def test_org_agents_are_invisible_to_other_orgs_keys(world: World) -> None:
    alice, bob = await world.user("alice"), await world.user("bob")
    slug_a, _ = await world.org(alice)
    slug_b, _ = await world.org(alice, {"viewer": bob})
    agent = await alice.create_agent(f"/orgs/{slug_a}/agents")
    # A key owned by org B never reaches org A's agents, although its creator owns org A.
    org_b_key = await alice.key_client(org_slug=slug_b)
    assert_error(await org_b_key.get(f"/agents/{agent['id']}"), 404, "resource.not_found")
    assert_error(await org_b_key.get(f"/orgs/{slug_a}/agents"), 404, "resource.not_found")
    assert (await org_b_key.get(f"/orgs/{slug_b}/agents")).status_code == 200
    # ... nor the user's personal agents.
    assert_error(await org_b_key.get("/users/me/agents"), 403, "auth.forbidden")
    mine = await alice.create_agent()
    assert_error(await org_b_key.get(f"/agents/{mine['id']}"), 404)


async def test_api_key_scopes(world: World) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    reader = await alice.key_client(["agents:read"])
    assert (await reader.get(f"/agents/{agent['id']}")).status_code == 200
    assert (await reader.get("/users/me/agents")).status_code == 200
    assert_error(await reader.post("/users/me/agents", json={}), 403, "auth.insufficient_scope")
    assert_error(await reader.patch(f"/agents/{agent['id']}", json={}), 403, "auth.insufficient_scope")
    assert_error(await reader.get(f"/agents/{agent['id']}/conversations"), 403, "auth.insufficient_scope")
    history = await alice.key_client(["conversations:read"])
    assert_error(await history.get(f"/agents/{agent['id']}"), 403, "auth.insufficient_scope")
    assert (await history.get(f"/agents/{agent['id']}/conversations")).status_code == 200
    writer = await alice.key_client(["agents:write", "agents:read"])
    assert (await writer.post("/users/me/agents", json={})).status_code == 201


async def test_status_transitions(world: World) -> None:
    alice = await world.user()
    agent = await alice.create_agent(blueprint=valid_blueprint())
    path = f"/agents/{agent['id']}/status"

    async def move(status: str) -> Any:
        return await alice.catalog.patch(path, json={"status": status})

    assert (await move("draft")).status_code == 200  # same status: a no-op
    assert (await move("live")).json()["status"] == "live"
    assert (await move("draft")).json()["status"] == "draft"
    assert (await move("archived")).json()["status"] == "archived"
    err = assert_error(await move("live"), 409, "agent.invalid_status_transition")
    assert err["params"] == {"from_status": "archived", "to_status": "live"}
    assert (await move("draft")).json()["status"] == "draft"
    assert (await move("live")).status_code == 200
    assert (await move("archived")).status_code == 200
    assert_error(await alice.catalog.patch(path, json={"status": "deleted"}), 422)


async def test_agent_events_published_on_every_change(world: World, ctx: Any) -> None:
    alice = await world.user()
    nc = await nats.connect(ctx.settings.nats_url)
    seen: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        seen.append({"subject": msg.subject, **json.loads(msg.data)})

    await nc.subscribe(f"{subjects.CATALOG_AGENT_EVENTS}.>", cb=collect)
    await subscribed(nc)
    try:
        agent = await alice.create_agent(blueprint=valid_blueprint())
        await alice.catalog.patch(f"/agents/{agent['id']}", json={"config": {"name": "n"}})
        await alice.catalog.patch(f"/agents/{agent['id']}", json={})  # no change, no event
        await alice.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
        await alice.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})  # no-op
        await alice.catalog.delete(f"/agents/{agent['id']}")

        async def mine() -> list[dict[str, Any]] | None:
            events = [e for e in seen if e["agent_id"] == agent["id"]]
            return events if len(events) >= 4 else None

        events = await eventually(mine)
    finally:
        await nc.close()
    assert [(e["subject"], e["kind"], e["version"]) for e in events] == [
        ("catalog.events.agent.created", "created", 1),
        ("catalog.events.agent.updated", "updated", 2),
        ("catalog.events.agent.status_changed", "status_changed", 3),
        ("catalog.events.agent.deleted", "deleted", 4),
    ]
    assert [e["status"] for e in events] == ["draft", "draft", "live", "live"]


async def test_agent_events_reach_nats_before_the_change_is_answered() -> None:
    """The gateways reuse access answers until an event names the agent: the events of a change
    are flushed (a round trip to the server) before the route answers, the client's waiting
    commands written before its PING (`parley_common.bus.flushed`); while NATS is away they wait
    in the client's buffer and nothing blocks the answer."""
    order: list[str] = []

    class Connection:
        is_connected = True

        async def _flush_pending(self, force_flush: bool = False) -> None:
            order.append(f"written (forced: {force_flush})")

        async def flush(self, timeout: float) -> None:
            order.append("flush")

    class Broker:
        connection = Connection()

        async def publish(self, event: AgentEvent, subject: str) -> None:
            order.append(f"{subject} {event.agent_id}")

    changed = [SimpleNamespace(id=uuid.uuid4(), version=2, status="live") for _ in range(3)]
    await events.publish_all(Broker(), changed, AgentEventKind.UPDATED)  # type: ignore[arg-type]
    published = [f"catalog.events.agent.updated {a.id}" for a in changed]
    assert order == [*published, "written (forced: True)", "flush"]

    order.clear()
    Connection.is_connected = False
    await events.publish(Broker(), changed[0], AgentEventKind.DELETED)  # type: ignore[arg-type]
    assert order == [f"catalog.events.agent.deleted {changed[0].id}"]


async def test_create_from_template(world: World) -> None:
    alice = await world.user()
    template = await alice.catalog.post(
        "/users/me/templates",
        json={
            "name": "Receptionist",
            "config": {"name": "Receptionist", "language": "en"},
            "secrets": [{"key": "CRM_TOKEN", "value": "template-secret-value-1234"}],
            "blueprint": valid_blueprint(),
        },
    )
    assert template.status_code == 201, template.text
    tid = template.json()["id"]
    plain = await alice.catalog.post("/users/me/agents", json={"template_id": tid})
    assert plain.status_code == 201, plain.text
    body = plain.json()
    assert body["template_id"] == tid and body["config"] == {"name": "Receptionist", "language": "en"}
    assert body["blueprint"] == template.json()["blueprint"]
    assert [s["key"] for s in body["secrets"]] == ["CRM_TOKEN"]
    overridden = await alice.catalog.post(
        "/users/me/agents",
        json={
            "template_id": tid,
            "config": {"name": "Mine"},
            "secrets": [{"key": "OTHER", "value": "x"}, {"key": "CRM_TOKEN", "value": "override"}],
        },
    )
    assert overridden.json()["config"] == {"name": "Mine"}
    assert sorted(s["key"] for s in overridden.json()["secrets"]) == ["CRM_TOKEN", "OTHER"]
    # Someone else's template reads as missing.
    bob = await world.user()
    assert_error(
        await bob.catalog.post("/users/me/agents", json={"template_id": tid}), 404, "resource.not_found"
    )
    # An org agent from a template of the org, and from one's own template.
    slug, _ = await world.org(alice, {"member": bob})
    org_template = await alice.catalog.post(f"/orgs/{slug}/templates", json={"name": "Org template"})
    made = await bob.catalog.post(f"/orgs/{slug}/agents", json={"template_id": org_template.json()["id"]})
    assert made.status_code == 201 and made.json()["config"] == {"name": "Org template"}


async def test_pagination_edges(world: World) -> None:
    alice = await world.user()
    ids = [(await alice.create_agent(config={"name": f"Agent {i}"}))["id"] for i in range(5)]
    newest_first = list(reversed(ids))
    seen: list[str] = []
    for page in (1, 2, 3):
        resp = await alice.catalog.get("/users/me/agents", params={"limit": 2, "page": page})
        body = resp.json()
        assert body["total"] == 5 and body["limit"] == 2 and body["page"] == page
        seen += [a["id"] for a in body["items"]]
    assert seen == newest_first
    beyond = (await alice.catalog.get("/users/me/agents", params={"limit": 2, "page": 4})).json()
    assert beyond["items"] == [] and beyond["total"] == 5
    default = (await alice.catalog.get("/users/me/agents")).json()
    assert default["limit"] == 20 and default["page"] == 1 and len(default["items"]) == 5
    full = (await alice.catalog.get("/users/me/agents", params={"limit": 100})).json()
    assert len(full["items"]) == 5
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"page": 0},
        {"page": -1},
        {"limit": "x"},
        {"search": "x" * 201},
    ):
        assert_error(
            await alice.catalog.get("/users/me/agents", params=params), 422, "request.validation_failed"
        )


async def test_full_text_search(world: World) -> None:
    alice = await world.user()
    made = {
        name: (await alice.create_agent(config={"name": name, "description": description}))["id"]
        for name, description in [
            ("Billing assistant", "Answers invoice questions"),
            ("Soporte técnico", "Ayuda con la instalación"),
            ("Sales bot", "Qualifies leads for the billing team"),
            ("Quiet one", None),
        ]
    }

    async def names(search: str) -> set[str]:
        resp = await alice.catalog.get("/users/me/agents", params={"search": search})
        assert resp.status_code == 200, resp.text
        found = {a["config"]["name"] for a in resp.json()["items"]}
        assert resp.json()["total"] == len(found)
        return found

    assert await names("billing") == {"Billing assistant", "Sales bot"}  # name or description
    assert await names("BILL") == {"Billing assistant", "Sales bot"}  # prefix, any case
    assert await names("billing team") == {"Sales bot"}  # every word
    assert await names("instalación") == {"Soporte técnico"}
    assert await names("invoice") == {"Billing assistant"}
    assert await names("nothing-like-it") == set()
    assert len(await names("   ")) == len(made)  # no words: no filter
    # Query syntax is not interpreted: operators and quotes are just separators.
    for hostile in ("bill & !sales", "'; drop table", "a:*|b", "(((", "\\", "billing:*"):
        await names(hostile)
    # Other users' agents never match.
    bob = await world.user()
    assert (await bob.catalog.get("/users/me/agents", params={"search": "billing"})).json()["total"] == 0


async def test_deeply_nested_json_is_a_4xx(world: World) -> None:
    alice = await world.user()
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = await alice.catalog.post(
        "/users/me/agents", content=deep, headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, resp.status_code


async def test_patch_keeps_unrelated_fields(world: World, catalog_app: FastAPI) -> None:
    alice = await world.user()
    agent = await alice.create_agent(
        config={"name": unique("a")}, secrets=[{"key": "K", "value": "v"}], blueprint=valid_blueprint()
    )
    patched = (await alice.catalog.patch(f"/agents/{agent['id']}", json={"config": {"name": "b"}})).json()
    assert patched["secrets"] == agent["secrets"] and patched["blueprint"] == agent["blueprint"]
    nulls = await alice.catalog.patch(f"/agents/{agent['id']}", json={"config": None, "blueprint": None})
    assert nulls.status_code == 200 and nulls.json()["config"] == {"name": "b"}


async def test_text_postgres_cannot_store_is_422(world: World) -> None:
    """Lone surrogates (legal in JSON escapes, not in UTF-8) and NUL never reach the database."""
    alice = await world.user()
    node_data = (
        b'{"blueprint": {"entries": [{"name": "m", "workflow": '
        b'{"nodes": [{"id": "a", "type": "t", "data": {"k": "\\udfff"}}], "edges": []}}]}}'
    )
    for raw in (b'{"config": {"name": "a\\ud800b"}}', node_data, b'{"config": {"name": "ok\\u0000"}}'):
        resp = await alice.catalog.post(
            "/users/me/agents", content=raw, headers={"content-type": "application/json"}
        )
        assert_error(resp, 422, "request.validation_failed")
    agent = await alice.create_agent()
    lint = await alice.catalog.post(
        f"/agents/{agent['id']}/lint", content=node_data, headers={"content-type": "application/json"}
    )
    assert_error(lint, 422, "request.validation_failed")
    for query in ("search=a%ED%A0%80", "search=%ff%fe"):
        assert (await alice.catalog.get("/users/me/agents?" + query)).status_code == 200
