"""Users, API keys, client tokens, agents and transcripts, made and read through the real HTTP APIs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness.stack import Stack


@dataclass
class User:
    cookie: str
    id: str


async def signup(stack: Stack) -> User:
    email = f"rt-{uuid.uuid4().hex[:10]}@example.com"
    async with stack.http(stack.auth) as http:
        resp = await http.post(
            "/auth/signup", json={"email": email, "password": "correct horse battery", "name": "Rt"}
        )
        assert resp.status_code == 201, resp.text
        cookie = resp.cookies["kivox_session"]
        me = await http.get("/users/me", headers={"Cookie": f"kivox_session={cookie}"})
    return User(cookie=cookie, id=me.json()["id"])


async def api_key(stack: Stack, user: User) -> str:
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:
        resp = await http.post("/auth/api-keys", json={"name": "realtime"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])


async def client_token(stack: Stack, key: str, agent_id: str, data: dict[str, Any] | None = None) -> str:
    async with stack.http(stack.auth, headers={"Authorization": f"Bearer {key}"}) as http:
        body: dict[str, Any] = {"workflow_id": agent_id}
        if data is not None:
            body["data"] = data
        resp = await http.post("/chat/tokens", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["token"])


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "data": data}


def edge(source: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **extra}


async def make_agent(
    stack: Stack,
    user: User,
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    *,
    live: bool = True,
    secrets: dict[str, str] | None = None,
    **config: Any,
) -> str:
    body: dict[str, Any] = {
        "config": {"name": "Realtime test agent", **config},
        "blueprint": {"entries": [{"name": "main", "workflow": {"nodes": nodes, "edges": edges}}]},
    }
    if secrets:
        body["secrets"] = [{"key": k, "value": v} for k, v in secrets.items()]
    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:
        resp = await http.post("/users/me/agents", json=body)
        assert resp.status_code == 201, resp.text
        agent_id = str(resp.json()["id"])
        if live:
            resp = await http.patch(f"/agents/{agent_id}/status", json={"status": "live"})
            assert resp.status_code == 200, resp.text
    return agent_id


def chat_agent(**config: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """START (greeting) → DIALOG (LLM, any number of turns) → END."""
    nodes = [
        node("start", "CONTROL.START", greeting="Hi, I am listening."),
        node("chat", "CONTROL.DIALOG", exit_when="last_user_message == 'bye'"),
        node("end", "CONTROL.END", message="Bye!"),
    ]
    return nodes, [edge("start", "chat"), edge("chat", "end")]


async def transcript(stack: Stack, user: User, conversation_id: str, *, ended: bool = True) -> dict[str, Any]:
    """The conversation and its messages as the catalog persisted them (waits for the end)."""
    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:

        async def fetch() -> dict[str, Any] | None:
            conv = await http.get(f"/conversations/{conversation_id}")
            if conv.status_code != 200 or (ended and conv.json()["status"] != "ended"):
                return None
            messages = await http.get(f"/conversations/{conversation_id}/messages", params={"limit": 100})
            assert messages.status_code == 200, messages.text
            return {**conv.json(), "messages": [(m["role"], m["content"]) for m in messages.json()["items"]]}

        found: dict[str, Any] = await eventually(fetch, what=f"conversation {conversation_id} persisted")
        return found


async def eventually(probe: Callable[[], Awaitable[Any]], *, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
