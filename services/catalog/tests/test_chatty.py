"""The ServiceAi Chatty Voice routes: the agent a request is bound to (`X-Parley-Agent`), its tool
catalogue and execution in the contract's shapes, its instructions, and who is refused (403 with
the envelope: no agent, another owner's agent, a client token, a viewer executing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from parley_catalog.app import build_app
from parley_common.chatty_contract import AGENT_HEADER, ChattyToolDefinition

from .conftest import catalog_settings_for
from .fake_webhook import FakeWebhook
from .support import User, World, assert_error, blueprint, client, edge, node

PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name", "minLength": 2},
        "units": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city"],
}


async def agent_with_tools(user: User, fake: FakeWebhook, path: str = "/users/me/agents") -> dict[str, Any]:
    agent = await user.create_agent(
        path,
        config={"name": "Voice", "global_system_prompt": "You are Acme's field assistant."},
        blueprint=blueprint(
            [
                node("start", "CONTROL.START", greeting="Hi"),
                node("triage", "CONTROL.DIALOG", prompt="Ask what is broken."),
                node("book", "CONTROL.DIALOG", message="I booked a visit."),
                node("end", "CONTROL.END"),
            ],
            [edge("start", "triage"), edge("triage", "book"), edge("book", "end")],
        ),
    )
    for name, params in (
        ("weather", PARAMS),
        # Not representable as a ChattyToolDefinition: a property without `type`.
        ("loose", {"type": "object", "properties": {"anything": {"description": "no type"}}}),
    ):
        resp = await user.catalog.post(
            f"/agents/{agent['id']}/tools",
            json={
                "name": name,
                "description": f"The {name} tool",
                "parameters": params,
                "webhook": {"url": fake.url("/echo")},
            },
        )
        assert resp.status_code == 201, resp.text
    return agent


def bound(agent: dict[str, Any]) -> dict[str, str]:
    return {AGENT_HEADER: agent["id"]}


@pytest.fixture
async def alice(world: World) -> User:
    return await world.user()


@pytest.fixture
async def agent(alice: User, fake: FakeWebhook) -> dict[str, Any]:
    """Alice's agent with the weather and loose tools, bound to each request by `bound(agent)`."""
    return await agent_with_tools(alice, fake)


async def get_ok(user: User, path: str, agent: dict[str, Any]) -> Any:
    """The 200 JSON body of a Chatty GET for `agent`."""
    resp = await user.catalog.get(path, headers=bound(agent))
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_tools_are_the_bare_array_of_the_bound_agent(alice: User, agent: dict[str, Any]) -> None:
    tools = await get_ok(alice, "/api/chatty-voice/tools", agent)
    assert isinstance(tools, list)
    assert tools == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "The weather tool", "parameters": PARAMS},
        }
    ]
    ChattyToolDefinition.model_validate(tools[0])
    # The tool that does not fit the contract's shape stays in Parley's own catalogue.
    own = await alice.catalog.get(f"/agents/{agent['id']}/tools")
    assert sorted(t["function"]["name"] for t in own.json()) == ["loose", "weather"]


async def test_execute_by_function_or_legacy_name(
    alice: User, agent: dict[str, Any], allow_private: None
) -> None:
    run = await alice.catalog.post(
        "/api/chatty-voice/tools/execute",
        headers=bound(agent),
        json={"function": "weather", "arguments": {"city": "Lima"}},
    )
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["success"] is True and body["data"]["body"] == {"city": "Lima"}
    legacy = await alice.catalog.post(
        "/api/chatty-voice/tools/execute", headers=bound(agent), json={"name": "loose", "arguments": {}}
    )
    assert legacy.json()["success"] is True  # executable by name even though it is not listed
    # Failures are 200 envelopes with a code.
    for payload, code in (
        ({"function": "nope"}, "tool.unknown_function"),
        ({"function": "x" * 500}, "tool.unknown_function"),
        ({}, "tool.function_required"),
        (None, "tool.function_required"),
        ({"function": "weather", "arguments": {"city": "L"}}, "tool.invalid_arguments"),
    ):
        resp = await alice.catalog.post("/api/chatty-voice/tools/execute", headers=bound(agent), json=payload)
        assert resp.status_code == 200, resp.text
        assert resp.json()["success"] is False and resp.json()["code"] == code, resp.json()
        assert "error" in resp.json()
    assert_error(
        await alice.catalog.post(
            "/api/chatty-voice/tools/execute",
            headers=bound(agent),
            json={"function": "weather", "arguments": [1]},
        ),
        422,
    )


async def test_ai_context_from_prompt_and_flow(alice: User, agent: dict[str, Any]) -> None:
    body = await get_ok(alice, "/api/chatty-voice/ai-context", agent)
    assert set(body) == {"instructions", "knowledgeBaseLoaded", "workflowStagesLoaded", "timestamp"}
    assert body["instructions"] == (
        "You are Acme's field assistant.\n\n"
        "Workflow stages:\n1. triage: Ask what is broken.\n2. book: I booked a visit."
    )
    assert body["workflowStagesLoaded"] is True and body["knowledgeBaseLoaded"] is False
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    bare = await alice.create_agent()
    empty = await get_ok(alice, "/api/chatty-voice/ai-context", bare)
    assert empty["instructions"] == "" and empty["workflowStagesLoaded"] is False


async def test_who_is_refused(world: World, fake: FakeWebhook) -> None:
    alice, mallory, viewer = (
        await world.user("alice"),
        await world.user("mallory"),
        await world.user("viewer"),
    )
    agent = await agent_with_tools(alice, fake)
    routes = [
        ("GET", "/api/chatty-voice/tools", None),
        ("POST", "/api/chatty-voice/tools/execute", {"function": "weather", "arguments": {"city": "Lima"}}),
        ("GET", "/api/chatty-voice/ai-context", None),
    ]
    anon = world.catalog_client()
    token_resp = await alice.auth.post(
        "/chat/tokens",
        json={"workflow_id": agent["id"]},
        headers={"Authorization": f"Bearer {await alice.api_key(scopes=['tokens:mint'])}"},
    )
    end_user = world.catalog_client(headers={"Authorization": f"Bearer {token_resp.json()['token']}"})
    reader_key = await alice.key_client(scopes=["agents:read"])
    for method, path, payload in routes:
        assert_error(
            await anon.request(method, path, headers=bound(agent), json=payload), 401, "auth.unauthenticated"
        )
        # Nothing binds the request: 403 with the envelope.
        assert_error(await alice.catalog.request(method, path, json=payload), 403, "chatty.agent_required")
        # Another owner's agent, an unknown one and a malformed id read the same.
        for headers in (
            bound(agent),
            {AGENT_HEADER: "9b0e4a57-2f59-4b48-8b5e-0a4b6d0d7c11"},
            {AGENT_HEADER: "x"},
        ):
            body = assert_error(
                await mallory.catalog.request(method, path, headers=headers, json=payload), 403
            )
            assert body["code"] == "chatty.not_entitled"
        # A client token talks to its agent; it does not read its tools or prompt, nor runs them.
        assert_error(
            await end_user.request(method, path, headers=bound(agent), json=payload),
            403,
            "chatty.not_entitled",
        )
    # An API key needs agents:read to read and agents:write to execute.
    assert (await reader_key.get("/api/chatty-voice/tools", headers=bound(agent))).status_code == 200
    assert_error(
        await reader_key.post("/api/chatty-voice/tools/execute", headers=bound(agent), json=routes[1][2]),
        403,
        "auth.insufficient_scope",
    )
    # Org agents: a viewer reads, only a member executes.
    slug, _ = await world.org(alice, {"viewer": viewer})
    org_agent = await agent_with_tools(alice, fake, f"/orgs/{slug}/agents")
    assert (
        await viewer.catalog.get("/api/chatty-voice/ai-context", headers=bound(org_agent))
    ).status_code == 200
    assert_error(
        await viewer.catalog.post(
            "/api/chatty-voice/tools/execute", headers=bound(org_agent), json=routes[1][2]
        ),
        403,
        "auth.insufficient_role",
    )


async def test_old_clients_get_426_with_the_upgrade_envelope(migrated: Any) -> None:
    """The version gate answers before anything else, on every Chatty Voice route."""
    app = build_app(catalog_settings_for(migrated, api_version="2.1.0", min_client_version="2.0.0"))
    async with client(app) as http:
        for method, path in (
            ("GET", "/api/chatty-voice/tools"),
            ("POST", "/api/chatty-voice/tools/execute"),
            ("GET", "/api/chatty-voice/ai-context"),
        ):
            resp = await http.request(method, path, headers={"X-Client-Version": "1.9.0"})
            body = assert_error(resp, 426, "client.upgrade_required")
            assert (body["apiVersion"], body["minClientVersion"]) == ("2.1.0", "2.0.0")
            current = await http.request(method, path, headers={"X-Client-Version": "2.0.0"})
            assert current.status_code == 401  # past the gate: no credential
