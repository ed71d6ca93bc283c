"""Tools: catalogues in the OpenAI function format, webhook tool records, and execution against
a real local HTTP server (timeouts, retries, size limit, address guard)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import nats
import pytest

from parley_catalog.context import CatalogContext
from parley_catalog.crypto import MASK
from parley_common import subjects
from parley_common.netguard import BlockedDestination, vet, why_blocked

from .fake_webhook import FakeWebhook
from .support import User, World, assert_error, unique

TOKEN = "Bearer webhook-token-0123456789-ABCD"
PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer"}},
    "required": ["city"],
}


def tool_body(
    fake: FakeWebhook, path: str = "/echo", name: str = "weather", **webhook: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Calls {path}",
        "parameters": PARAMS,
        "webhook": {"url": fake.url(path), "method": "POST", **webhook},
    }


async def make_tool(user: User, owner_path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await user.catalog.post(f"{owner_path}/tools", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def execute(user: User, owner_path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await user.catalog.post(f"{owner_path}/tools/execute", json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_catalogue_is_the_bare_openai_array(world: World, fake: FakeWebhook) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    assert (await alice.catalog.get(f"{owner}/tools")).json() == []
    created = await make_tool(alice, owner, tool_body(fake, secret_headers={"Authorization": TOKEN}))
    assert created["owner_agent_id"] == agent["id"] and created["name"] == "weather"
    assert created["webhook"]["secret_headers"] == [{"key": "Authorization", "value": MASK + "ABCD"}]
    assert TOKEN not in json.dumps(created)
    catalogue = (await alice.catalog.get(f"{owner}/tools")).json()
    assert catalogue == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Calls /echo", "parameters": PARAMS},
        }
    ]


async def test_execute_webhook_tool(world: World, fake: FakeWebhook, allow_private: None) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    await make_tool(
        alice, owner, tool_body(fake, headers={"X-Team": "support"}, secret_headers={"Authorization": TOKEN})
    )
    result = await execute(alice, owner, {"function": "weather", "arguments": {"city": "Lima", "days": 2}})
    assert result["success"] is True
    data = result["data"]
    assert data["method"] == "POST" and data["body"] == {"city": "Lima", "days": 2}
    assert data["headers"]["authorization"] == TOKEN and data["headers"]["x-team"] == "support"
    assert data["headers"]["x-parley-tool"] == "weather"
    # The legacy alias `name` works the same.
    legacy = await execute(alice, owner, {"name": "weather", "arguments": {"city": "Quito"}})
    assert legacy["success"] is True and legacy["data"]["body"] == {"city": "Quito"}
    # GET sends the arguments as query parameters (non-strings JSON-encoded).
    await make_tool(alice, owner, tool_body(fake, name="lookup", method="GET"))
    got = await execute(alice, owner, {"function": "lookup", "arguments": {"city": "Cusco", "days": 3}})
    assert got["data"]["method"] == "GET" and got["data"]["query"] == {"city": "Cusco", "days": "3"}


async def test_execution_failures_are_envelopes(world: World, fake: FakeWebhook, allow_private: None) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    for name, path in (
        ("env", "/envelope"),
        ("boom", "/boom"),
        ("big", "/big"),
        ("moved", "/redirect"),
        ("txt", "/text"),
    ):
        await make_tool(alice, owner, tool_body(fake, path, name=name))

    def call(name: str, **arguments: Any) -> dict[str, Any]:
        return {"function": name, "arguments": arguments or {"city": "x"}}

    assert await execute(alice, owner, call("env")) == {
        "success": False,
        "error": "Room is locked",
        "code": "room.locked",
        "action": {"type": "unlock"},
    }
    boom = await execute(alice, owner, call("boom"))
    assert (
        boom["success"] is False
        and boom["code"] == "tool.webhook_failed"
        and boom["data"] == {"error": "exploded"}
    )
    assert (await execute(alice, owner, call("big")))["code"] == "tool.response_too_large"
    moved = await execute(alice, owner, call("moved"))
    assert moved["code"] == "tool.webhook_failed" and "302" in moved["error"]  # redirects are not followed
    assert await execute(alice, owner, call("txt")) == {"success": True, "data": "plain words"}
    unknown = await execute(alice, owner, call("nope"))
    assert unknown["success"] is False and unknown["code"] == "tool.unknown_function"
    missing = await execute(alice, owner, {"arguments": {}})
    assert missing["success"] is False and missing["code"] == "tool.function_required"
    bad_args = await execute(alice, owner, {"function": "env", "arguments": {"days": "many"}})
    assert bad_args["code"] == "tool.invalid_arguments" and "city" in bad_args["error"]
    assert_error(
        await alice.catalog.post(f"{owner}/tools/execute", json={"function": "env", "arguments": [1]}), 422
    )


async def test_retries_only_for_idempotent_methods(
    world: World, fake: FakeWebhook, allow_private: None
) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    await make_tool(alice, owner, tool_body(fake, "/flaky", name="get_flaky", method="GET"))
    await make_tool(alice, owner, tool_body(fake, "/flaky", name="post_flaky", method="POST"))
    fake.calls.clear()
    got = await execute(alice, owner, {"function": "get_flaky", "arguments": {"city": "x"}})
    assert got == {"success": True, "data": {"attempt": 3}} and fake.calls["GET /flaky"] == 3
    posted = await execute(alice, owner, {"function": "post_flaky", "arguments": {"city": "x"}})
    assert posted["code"] == "tool.webhook_failed" and fake.calls["POST /flaky"] == 1


async def test_timeout(world: World, fake: FakeWebhook, allow_private: None) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    await make_tool(alice, owner, tool_body(fake, "/slow", name="slow_post", timeout_s=0.3))
    await make_tool(alice, owner, tool_body(fake, "/slow", name="slow_get", method="GET", timeout_s=0.3))
    fake.calls.clear()
    assert (await execute(alice, owner, {"function": "slow_post", "arguments": {"city": "x"}}))["code"] == (
        "tool.webhook_timeout"
    )
    assert fake.calls["POST /slow"] == 1
    assert (await execute(alice, owner, {"function": "slow_get", "arguments": {"city": "x"}}))["code"] == (
        "tool.webhook_timeout"
    )
    assert fake.calls["GET /slow"] == 3  # 1 + PARLEY_CATALOG_TOOLS_MAX_RETRIES (2)


async def test_guard_blocks_private_destinations_by_default(world: World, fake: FakeWebhook) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    await make_tool(alice, owner, tool_body(fake))
    fake.calls.clear()
    for url, name in (
        (fake.url("/echo"), "loopback"),
        ("http://localhost:9/x", "localhost"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://10.1.2.3/", "private"),
        ("http://[::1]:9/", "v6loopback"),
        ("http://[::ffff:127.0.0.1]:9/", "mapped"),
        ("http://0.0.0.0:9/", "unspecified"),
    ):
        await make_tool(alice, owner, {**tool_body(fake, name=name), "webhook": {"url": url}})
        result = await execute(alice, owner, {"function": name, "arguments": {"city": "x"}})
        assert result["success"] is False and result["code"] == "tool.destination_blocked", (name, result)
    blocked = await execute(alice, owner, {"function": "weather", "arguments": {"city": "x"}})
    assert blocked["code"] == "tool.destination_blocked" and "127.0.0.1" in blocked["error"]
    assert sum(fake.calls.values()) == 0  # nothing reached the server


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("::ffff:10.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_guard_address_classes(address: str, blocked: bool) -> None:
    assert (why_blocked(ipaddress.ip_address(address)) is not None) is blocked


async def test_guard_resolves_names() -> None:
    with pytest.raises(BlockedDestination):
        await vet("localhost", 80)
    with pytest.raises(BlockedDestination):
        await vet("no-such-host.invalid", 80)
    assert (await vet("93.184.216.34", 443)).address == "93.184.216.34"


async def test_org_tools_shadowing_and_org_execute(
    world: World, fake: FakeWebhook, allow_private: None
) -> None:
    owner, viewer = await world.user("owner"), await world.user("viewer")
    slug, _ = await world.org(owner, {"viewer": viewer})
    org_path = f"/orgs/{slug}"
    await make_tool(owner, org_path, tool_body(fake, name="shared"))
    await make_tool(owner, org_path, tool_body(fake, "/envelope", name="weather"))
    agent = await owner.create_agent(f"{org_path}/agents")
    agent_path = f"/agents/{agent['id']}"
    await make_tool(owner, agent_path, tool_body(fake, name="weather"))
    names = [t["function"]["name"] for t in (await viewer.catalog.get(f"{agent_path}/tools")).json()]
    assert names == ["weather", "shared"]  # own first; the org's `weather` is shadowed
    org_names = [t["function"]["name"] for t in (await viewer.catalog.get(f"{org_path}/tools")).json()]
    assert org_names == ["shared", "weather"]
    # The agent's `weather` (echo) wins over the org's (envelope) ...
    assert (await execute(owner, agent_path, {"function": "weather", "arguments": {"city": "x"}}))["success"]
    # ... and the org path runs the org's own.
    assert (await execute(owner, org_path, {"function": "weather", "arguments": {"city": "x"}}))[
        "code"
    ] == "room.locked"
    # Roles: viewers read catalogues, only members define or run tools.
    assert_error(
        await viewer.catalog.post(f"{org_path}/tools", json=tool_body(fake, name="v")),
        403,
        "auth.insufficient_role",
    )
    assert_error(
        await viewer.catalog.post(f"{agent_path}/tools/execute", json={"function": "weather"}),
        403,
        "auth.insufficient_role",
    )
    assert_error(
        await viewer.catalog.post(f"{org_path}/tools/execute", json={"function": "weather"}),
        403,
        "auth.insufficient_role",
    )
    outsider = await world.user("outsider")
    assert_error(await outsider.catalog.get(f"{org_path}/tools"), 404, "resource.not_found")
    assert_error(await outsider.catalog.get(f"{agent_path}/tools"), 404, "resource.not_found")
    assert_error(await outsider.catalog.post(f"{org_path}/tools/execute", json={"function": "weather"}), 404)


async def test_tool_records_crud(world: World, fake: FakeWebhook, ctx: CatalogContext) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    tool = await make_tool(alice, owner, tool_body(fake, secret_headers={"Authorization": TOKEN}))
    other = await make_tool(alice, owner, tool_body(fake, name="other"))
    listed = (await alice.catalog.get("/tools", params={"agent_id": agent["id"]})).json()
    assert [t["name"] for t in listed] == ["other", "weather"]
    assert (await alice.catalog.get(f"/tools/{tool['id']}")).json() == tool
    assert_error(await alice.catalog.post(f"{owner}/tools", json=tool_body(fake)), 409, "tool.name_taken")
    assert_error(
        await alice.catalog.patch(f"/tools/{other['id']}", json={"name": "weather"}), 409, "tool.name_taken"
    )
    # Writing the webhook back as read keeps the secret header.
    webhook = dict(tool["webhook"])
    webhook["secret_headers"] = {s["key"]: s["value"] for s in webhook["secret_headers"]}
    webhook["timeout_s"] = 5
    patched = await alice.catalog.patch(
        f"/tools/{tool['id']}", json={"webhook": webhook, "description": "new"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "new" and patched.json()["webhook"]["timeout_s"] == 5
    ctx.settings.catalog_tools_allow_private = True
    try:
        result = await execute(alice, owner, {"function": "weather", "arguments": {"city": "x"}})
    finally:
        ctx.settings.catalog_tools_allow_private = False
    assert result["data"]["headers"]["authorization"] == TOKEN
    assert (await alice.catalog.delete(f"/tools/{tool['id']}")).status_code == 204
    assert_error(await alice.catalog.get(f"/tools/{tool['id']}"), 404, "resource.not_found")
    await make_tool(alice, owner, tool_body(fake))  # the name is free again
    # Someone else's tools do not exist for you.
    bob = await world.user()
    for resp in (
        await bob.catalog.get(f"/tools/{other['id']}"),
        await bob.catalog.patch(f"/tools/{other['id']}", json={"description": "x"}),
        await bob.catalog.delete(f"/tools/{other['id']}"),
        await bob.catalog.get("/tools", params={"agent_id": agent["id"]}),
    ):
        assert_error(resp, 404, "resource.not_found")
    assert_error(await alice.catalog.get("/tools"), 422)
    assert_error(await alice.catalog.get("/tools", params={"agent_id": agent["id"], "org_slug": "x"}), 422)


async def test_invalid_tool_definitions(world: World, fake: FakeWebhook) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    owner = f"/agents/{agent['id']}"
    base = tool_body(fake, name=unique("t").replace("-", "_"))
    bad: list[dict[str, Any]] = [
        {**base, "name": "has space"},
        {**base, "name": "x" * 65},
        {**base, "parameters": {"type": "string"}},
        {**base, "parameters": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}},
        {**base, "webhook": {"url": "ftp://example.com/x"}},
        {**base, "webhook": {"url": "https://user:pw@example.com/x"}},
        {**base, "webhook": {"url": "https://example.com", "headers": {"X-A": "a\r\nInjected: 1"}}},
        {**base, "webhook": {"url": "https://example.com", "headers": {"Host": "evil"}}},
        {**base, "webhook": {"url": "https://example.com", "timeout_s": 31}},
        {**base, "webhook": {"url": "https://example.com", "method": "TRACE"}},
    ]
    for body in bad:
        assert_error(await alice.catalog.post(f"{owner}/tools", json=body), 422, "request.validation_failed")


async def test_tool_changes_reach_the_runtime_snapshot(
    world: World, fake: FakeWebhook, ctx: CatalogContext
) -> None:
    owner = await world.user()
    slug, _ = await world.org(owner)
    agent = await owner.create_agent(f"/orgs/{slug}/agents")
    nc = await nats.connect(ctx.settings.nats_url)
    try:

        async def snapshot() -> dict[str, Any]:
            msg = await nc.request(
                subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": agent["id"]}).encode(), timeout=5
            )
            return dict(json.loads(msg.data)["snapshot"])

        assert (await snapshot())["version"] == 1
        await make_tool(owner, f"/agents/{agent['id']}", tool_body(fake, name="own"))
        after_agent_tool = await snapshot()
        assert after_agent_tool["version"] == 2
        await make_tool(owner, f"/orgs/{slug}", tool_body(fake, name="shared"))
        after_org_tool = await snapshot()
        assert after_org_tool["version"] == 3
        assert [t["function"]["name"] for t in after_org_tool["tools"]] == ["own", "shared"]
    finally:
        await nc.close()
