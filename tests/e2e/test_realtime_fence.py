"""Who may open a `/realtime` socket, over the real stack (test_realtime's: its own NATS, auth and
catalog in this process, the gateway and two runtime workers as processes).

- A socket authenticated by the session cookie must come from the platform's own origin
  (`PARLEY_PUBLIC_URL` here, the default of `PARLEY_GATEWAY_ALLOWED_ORIGINS`); a page of any other
  origin gets `handshake_error` `realtime.origin_not_allowed`. `?token=` sockets are not checked.
- An organization's API key, and the client tokens it mints, talk only to that org's agents:
  another org's live agent and its creator's personal live agent are `resource.not_found`.
- Client tokens and cookie sessions do not reach the gateway's agent-sessions routes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from tests.e2e.harness import (
    Stack,
    User,
    api_key,
    chat_agent,
    client_token,
    make_agent,
    session,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

PUBLIC_URL = "https://parley.example.com"


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"PARLEY_PUBLIC_URL": PUBLIC_URL}


async def handshake(
    stack: Stack,  # noqa: F811
    agent_id: str,
    *,
    origin: str | None,
    **auth: str,
) -> tuple[dict[str, Any], int]:
    """The first server frame and the close code (1000 for a socket still open, which is closed)."""
    url = stack.gateway_url + (f"?token={auth['token']}" if "token" in auth else "")
    headers = {"Cookie": f"kivox_session={auth['cookie']}"} if "cookie" in auth else {}
    async with connect(url, additional_headers=headers, origin=Origin(origin) if origin else None) as ws:
        await ws.send(json.dumps({"type": "handshake", "agent_id": agent_id, "channel": "web-text"}))
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["type"] == "handshake_ok":
            return reply, 1000
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        return reply, closed.value.rcvd.code


async def test_cookie_sockets_must_come_from_the_public_origin(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    nodes, edges = chat_agent()
    agent = await make_agent(stack, user, nodes, edges)
    key = await api_key(stack, user)
    refused = {"type": "handshake_error", "reason": "realtime.origin_not_allowed"}
    for origin in (
        "https://evil.example",
        "null",
        "https://parley.example.com:8443",
        "http://parley.example.com",
    ):
        assert await handshake(stack, agent, origin=origin, cookie=user.cookie) == (refused, 4400), origin
    for allowed in (PUBLIC_URL, "HTTPS://Parley.Example.com", None):
        reply, _ = await handshake(stack, agent, origin=allowed, cookie=user.cookie)
        assert reply["type"] == "handshake_ok", (allowed, reply)
    # A token in the URL is no ambient credential: any page that has one may use it.
    reply, _ = await handshake(stack, agent, origin="https://evil.example", token=key)
    assert reply["type"] == "handshake_ok", reply
    # With a token and the cookie, the token is the credential (a bad one is not saved by the cookie).
    reply, _ = await handshake(stack, agent, origin="https://evil.example", token="nope", cookie=user.cookie)
    assert reply == {"type": "handshake_error", "reason": "auth.unauthenticated"}
    # Credentials longer than any real one are refused before any lookup, as on HTTP.
    reply, code = await handshake(stack, agent, origin=None, token="sk_live_" + "x" * 5000)
    assert (reply, code) == ({"type": "handshake_error", "reason": "auth.unauthenticated"}, 4400)


async def _org(stack: Stack, owner: User) -> str:  # noqa: F811
    slug = f"rt-{uuid.uuid4().hex[:10]}"
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={owner.cookie}"}) as http:
        resp = await http.post("/orgs", json={"name": "Realtime org", "slug": slug})
        assert resp.status_code == 201, resp.text
    return slug


async def _live_org_agent(stack: Stack, owner: User, slug: str) -> str:  # noqa: F811
    nodes, edges = chat_agent()
    body = {
        "config": {"name": "Org agent"},
        "blueprint": {"entries": [{"name": "main", "workflow": {"nodes": nodes, "edges": edges}}]},
    }
    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={owner.cookie}"}) as http:
        resp = await http.post(f"/orgs/{slug}/agents", json=body)
        assert resp.status_code == 201, resp.text
        agent_id = str(resp.json()["id"])
        moved = await http.patch(f"/agents/{agent_id}/status", json={"status": "live"})
        assert moved.status_code == 200, moved.text
    return agent_id


async def test_an_org_key_talks_only_to_its_org_agents(stack: Stack) -> None:  # noqa: F811
    alice, bob = await signup(stack), await signup(stack)
    slug_a, slug_b = await _org(stack, alice), await _org(stack, bob)
    ours = await _live_org_agent(stack, alice, slug_a)
    theirs = await _live_org_agent(stack, bob, slug_b)
    nodes, edges = chat_agent()
    personal = await make_agent(stack, alice, nodes, edges)
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={alice.cookie}"}) as http:
        resp = await http.post("/auth/api-keys", json={"name": "org", "org_slug": slug_a})
        assert resp.status_code == 201, resp.text
        org_key = str(resp.json()["key"])

    async with session(stack, ours, token=org_key) as s:
        assert (await s.until("turn_complete"))[0]["content"] == "Hi, I am listening."
    async with session(stack, ours, token=await client_token(stack, org_key, ours)) as s:
        await s.until("turn_complete")
    for agent in (theirs, personal):
        for credential in (org_key, await client_token(stack, org_key, agent)):
            async with session(stack, agent, token=credential, expect_error=True) as s:
                assert s.events == [{"type": "handshake_error", "reason": "resource.not_found"}]
    # A personal key may talk to any live agent, as anyone may.
    async with session(stack, theirs, token=await api_key(stack, alice)) as s:
        await s.until("turn_complete")


async def test_agent_sessions_take_only_api_keys(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    nodes, edges = chat_agent()
    agent = await make_agent(stack, user, nodes, edges)
    token = await client_token(stack, await api_key(stack, user), agent)
    base = stack.gateway_url.replace("ws://", "http://").removesuffix("/realtime")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for headers in (
            {"Authorization": f"Bearer {token}"},
            {"Cookie": f"kivox_session={user.cookie}"},
            {"Authorization": f"Bearer {user.cookie}"},
        ):
            resp = await http.post(
                "/api/agent-sessions", json={"agentId": agent, "input": {}}, headers=headers
            )
            assert resp.status_code == 401, resp.text
            assert resp.json()["code"] == "auth.unauthenticated" and "error" in resp.json()


async def test_an_api_key_needs_the_session_scope_to_talk_to_an_agent(stack: Stack) -> None:  # noqa: F811
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:
        keys = {}
        for name, scopes in (("keys", ["keys:write"]), ("talk", ["sessions:write"])):
            resp = await http.post("/auth/api-keys", json={"name": name, "scopes": scopes})
            assert resp.status_code == 201, resp.text
            keys[name] = str(resp.json()["key"])
    async with session(stack, agent, token=keys["keys"], expect_error=True) as s:
        assert s.events == [{"type": "handshake_error", "reason": "auth.insufficient_scope"}]
    async with session(stack, agent, token=keys["talk"]) as s:
        await s.until("turn_complete")
