"""Cross-tenant: an organization's API key stays in its org (never the user's personal agents,
templates and tools, nor another org's), client tokens reach no catalog route, and over the bus
(`catalog.agent.access`, what the realtime handshake asks) an org's key or token reaches only its
own org's agents, live or not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client

from parley_catalog.context import CatalogContext
from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest

from .support import World, assert_error, valid_blueprint

TOOL = {
    "name": "lookup",
    "description": "Looks things up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "webhook": {"url": "https://example.com/hook", "method": "POST"},
}
TEMPLATE = {"name": "Template"}


@pytest.fixture
async def nc(ctx: CatalogContext) -> AsyncIterator[Client]:
    client = await nats.connect(ctx.settings.nats_url)
    yield client
    await client.close()


async def test_an_org_key_stays_in_its_org(world: World) -> None:
    alice = await world.user("alice")
    slug_a, _ = await world.org(alice)
    slug_b, _ = await world.org(alice)
    mine = await alice.create_agent(blueprint=valid_blueprint())
    theirs = await alice.create_agent(f"/orgs/{slug_b}/agents", blueprint=valid_blueprint())
    ours = await alice.create_agent(f"/orgs/{slug_a}/agents", blueprint=valid_blueprint())
    template_b = (await alice.catalog.post(f"/orgs/{slug_b}/templates", json=TEMPLATE)).json()
    personal_template = (await alice.catalog.post("/users/me/templates", json=TEMPLATE)).json()
    tool_b = (await alice.catalog.post(f"/orgs/{slug_b}/tools", json=TOOL)).json()
    personal_tool = (await alice.catalog.post(f"/agents/{mine['id']}/tools", json=TOOL)).json()

    org_key = await alice.key_client(org_slug=slug_a)
    # The account's own (personal) collections: refused outright.
    for method, path, body in (
        ("GET", "/users/me/agents", None),
        ("POST", "/users/me/agents", {}),
        ("GET", "/users/me/templates", None),
        ("POST", "/users/me/templates", TEMPLATE),
    ):
        assert_error(await org_key.request(method, path, json=body), 403, "auth.forbidden")
    # Personal and other-org things: as if they did not exist.
    hidden: list[tuple[str, str, Any]] = [
        ("GET", f"/orgs/{slug_b}/agents", None),
        ("POST", f"/orgs/{slug_b}/agents", {}),
        ("GET", f"/orgs/{slug_b}/templates", None),
        ("POST", f"/orgs/{slug_b}/templates", TEMPLATE),
        ("GET", f"/orgs/{slug_b}/tools", None),
        ("POST", f"/orgs/{slug_b}/tools", TOOL),
        ("POST", f"/orgs/{slug_b}/tools/execute", {"function": "lookup"}),
        ("GET", "/tools", {"org_slug": slug_b}),
        ("GET", "/tools", {"agent_id": mine["id"]}),
        ("GET", f"/templates/{template_b['id']}", None),
        ("PATCH", f"/templates/{personal_template['id']}", {"name": "x"}),
        ("DELETE", f"/templates/{template_b['id']}", None),
        ("GET", f"/tools/{tool_b['id']}", None),
        ("PATCH", f"/tools/{personal_tool['id']}", {"description": "x"}),
        ("DELETE", f"/tools/{tool_b['id']}", None),
    ]
    for agent in (mine, theirs):
        hidden += [
            ("GET", f"/agents/{agent['id']}", None),
            ("PATCH", f"/agents/{agent['id']}", {"config": {"name": "x"}}),
            ("PATCH", f"/agents/{agent['id']}/status", {"status": "live"}),
            ("POST", f"/agents/{agent['id']}/lint", None),
            ("GET", f"/agents/{agent['id']}/tools", None),
            ("POST", f"/agents/{agent['id']}/tools", TOOL),
            ("POST", f"/agents/{agent['id']}/tools/execute", {"function": "lookup"}),
            ("GET", f"/agents/{agent['id']}/conversations", None),
            ("DELETE", f"/agents/{agent['id']}", None),
        ]
    for method, path, body in hidden:
        if method == "GET" and path == "/tools":
            resp = await org_key.get(path, params=body)
        else:
            resp = await org_key.request(method, path, json=body)
        assert_error(resp, 404, "resource.not_found")
    # Its own org is open to it.
    assert (await org_key.get(f"/orgs/{slug_a}/agents")).status_code == 200
    assert (await org_key.get(f"/agents/{ours['id']}")).status_code == 200
    # Nothing moved.
    for agent in (mine, theirs):
        got = await alice.catalog.get(f"/agents/{agent['id']}")
        assert got.status_code == 200 and got.json()["status"] == "draft"
    assert (await alice.catalog.get(f"/tools/{tool_b['id']}")).json()["description"] == TOOL["description"]


async def test_client_tokens_reach_no_catalog_route(world: World, catalog_app: FastAPI) -> None:
    alice = await world.user()
    slug, _ = await world.org(alice)
    agent = await alice.create_agent(blueprint=valid_blueprint())
    await alice.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
    template = (await alice.catalog.post("/users/me/templates", json=TEMPLATE)).json()
    tool = (await alice.catalog.post(f"/agents/{agent['id']}/tools", json=TOOL)).json()
    key = await alice.api_key()
    resp = await alice.auth.post(
        "/chat/tokens", json={"workflow_id": agent["id"]}, headers={"Authorization": f"Bearer {key}"}
    )
    token = resp.json()["token"]
    values = {
        "{orgSlug}": slug,
        "{agentID}": agent["id"],
        "{templateID}": template["id"],
        "{toolID}": tool["id"],
        "{conversationID}": str(uuid.uuid4()),
        "{ref}": agent["id"],
    }
    end_user = world.catalog_client(headers={"Authorization": f"Bearer {token}"})
    checked = 0
    for template_path, operations in catalog_app.openapi()["paths"].items():
        if template_path in ("/version", "/api/version"):
            continue
        path = template_path
        for name, value in values.items():
            path = path.replace(name, value)
        for method in operations:
            resp = await end_user.request(method.upper(), path, json={})
            # Management routes: 403 (a valid credential of the wrong kind); the Octavus routes take
            # only an API key, so a token there is no credential at all (401).
            # The ServiceAi routes say it in their own words (docs/webrtc.md).
            expected = (401, "auth.unauthenticated") if path.startswith("/api/") else (403, "auth.forbidden")
            if path.startswith("/api/chatty-voice/"):
                expected = (403, "chatty.not_entitled")
            assert (resp.status_code, resp.json().get("code")) == expected, (method, path, resp.text)
            checked += 1
    assert checked >= 25
    assert (await alice.catalog.get(f"/agents/{agent['id']}")).json()["status"] == "live"


async def _access(nc: Client, agent_id: str, credential: str, auth: AuthClient) -> AgentAccessReply:
    principal = await auth.verify(credential)
    req = AgentAccessRequest(agent_id=agent_id, principal=principal)
    msg = await nc.request(subjects.CATALOG_AGENT_ACCESS, req.model_dump_json().encode(), timeout=5)
    return AgentAccessReply.model_validate_json(msg.data)


async def test_an_org_key_and_its_tokens_open_sessions_only_with_their_org_agents(
    world: World, nc: Client, ctx: CatalogContext
) -> None:
    alice, bob = await world.user("alice"), await world.user("bob")
    slug_a, _ = await world.org(alice)
    slug_b, _ = await world.org(bob)
    live: dict[str, str] = {}
    for name, user, path in (
        ("ours", alice, f"/orgs/{slug_a}/agents"),
        ("personal", alice, "/users/me/agents"),
        ("other_org", bob, f"/orgs/{slug_b}/agents"),
        ("strangers", bob, "/users/me/agents"),
    ):
        agent = await user.create_agent(path, blueprint=valid_blueprint())
        moved = await user.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
        assert moved.status_code == 200, moved.text
        live[name] = agent["id"]
    org_key = await alice.api_key(org_slug=slug_a)
    personal_key = await alice.api_key()

    async def token(key: str, agent_id: str) -> str:
        resp = await alice.auth.post(
            "/chat/tokens", json={"workflow_id": agent_id}, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["token"])

    for name, agent_id in live.items():
        by_key = await _access(nc, agent_id, org_key, ctx.auth)
        by_token = await _access(nc, agent_id, await token(org_key, agent_id), ctx.auth)
        for reply in (by_key, by_token):
            if name == "ours":
                assert reply.ok, (name, reply)
            else:
                assert not reply.ok and reply.error is not None, (name, reply)
                assert reply.error.code == "resource.not_found"
        # A personal key (and its tokens) may talk to any live agent, as anyone may.
        assert (await _access(nc, agent_id, personal_key, ctx.auth)).ok
        assert (await _access(nc, agent_id, await token(personal_key, agent_id), ctx.auth)).ok
