"""Which sockets may open a session with which agent, while the gateway reuses the catalog's
answers about live agents (`parley_session_gateway.agent_access`), over the real stack.

Every check runs right after the change's HTTP answer, without waiting: a change to an agent
(back to draft, deleted) refuses the next socket at once, as it did when every socket asked the
catalog; an org's keys never get an answer given to another org's.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from tests.e2e.harness import (
    Stack,
    User,
    api_key,
    chat_agent,
    make_agent,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
)
from websockets.asyncio.client import connect

# ruff: noqa: F811 - `stack` parameters are the fixture imported above


async def opening(stack: Stack, agent: str, *, cookie: str | None = None, token: str | None = None) -> str:
    """`ok`, or the reason of the `handshake_error`, for one socket (closed right after)."""
    url = stack.gateway_url + (f"?token={token}" if token else "")
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {}
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "handshake", "agent_id": agent}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return "ok" if reply["type"] == "handshake_ok" else str(reply["reason"])


async def org_with_key(stack: Stack, owner: User) -> tuple[str, str]:
    """A new org of `owner` and an API key of that org."""
    slug = f"org-{uuid.uuid4().hex[:10]}"
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={owner.cookie}"}) as http:
        made = await http.post("/orgs", json={"name": "Tenant", "slug": slug})
        assert made.status_code == 201, made.text
        key = await http.post("/auth/api-keys", json={"name": "sessions", "org_slug": slug})
        assert key.status_code == 201, key.text
    return slug, str(key.json()["key"])


async def test_a_changed_or_deleted_agent_is_seen_by_the_next_socket(stack: Stack) -> None:
    owner, stranger = await signup(stack), await signup(stack)
    agent = await make_agent(stack, owner, *chat_agent())
    key = await api_key(stack, stranger)
    for _ in range(2):  # the second one from the gateway's cache
        assert await opening(stack, agent, token=key) == "ok"
        assert await opening(stack, agent, cookie=stranger.cookie) == "ok"

    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={owner.cookie}"}) as catalog:
        moved = await catalog.patch(f"/agents/{agent}/status", json={"status": "draft"})
        assert moved.status_code == 200, moved.text
        # A draft: only its owner, from this moment.
        assert await opening(stack, agent, token=key) == "resource.not_found"
        assert await opening(stack, agent, cookie=stranger.cookie) == "resource.not_found"
        assert await opening(stack, agent, cookie=owner.cookie) == "ok"

        moved = await catalog.patch(f"/agents/{agent}/status", json={"status": "live"})
        assert moved.status_code == 200, moved.text
        assert await opening(stack, agent, token=key) == "ok"
        assert await opening(stack, agent, token=key) == "ok"

        assert (await catalog.delete(f"/agents/{agent}")).status_code == 204
        for credential in ({"token": key}, {"cookie": stranger.cookie}, {"cookie": owner.cookie}):
            assert await opening(stack, agent, **credential) == "resource.not_found"


async def test_an_orgs_keys_never_get_another_orgs_answer(stack: Stack) -> None:
    alice, bob = await signup(stack), await signup(stack)
    slug_a, key_a = await org_with_key(stack, alice)
    _, key_b = await org_with_key(stack, bob)
    nodes, edges = chat_agent()
    async with stack.http(stack.catalog, headers={"Authorization": f"Bearer {key_a}"}) as catalog:
        made = await catalog.post(
            f"/orgs/{slug_a}/agents",
            json={
                "config": {"name": "Org A's agent"},
                "blueprint": {"entries": [{"name": "main", "workflow": {"nodes": nodes, "edges": edges}}]},
            },
        )
        assert made.status_code == 201, made.text
        agent = str(made.json()["id"])
        live = await catalog.patch(f"/agents/{agent}/status", json={"status": "live"})
        assert live.status_code == 200, live.text

    for _ in range(2):
        assert await opening(stack, agent, token=key_a) == "ok"  # kept for org A's keys
        assert await opening(stack, agent, token=key_b) == "resource.not_found"
    # A person's own credential (no org) may talk to any live agent, as before.
    assert await opening(stack, agent, cookie=bob.cookie) == "ok"
    assert await opening(stack, agent, token=key_b) == "resource.not_found"
