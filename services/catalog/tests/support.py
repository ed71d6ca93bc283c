"""Helpers shared by the catalog tests (fixtures live in conftest.py).

Users, orgs and API keys are made through the real auth service's HTTP API; the catalog then
verifies them over the bus, as in production.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from parley_devstack.testing import assert_error as assert_error  # re-exported for the tests

COOKIE = "kivox_session"
PASSWORD = "correct horse battery staple"
_counter = itertools.count()
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


def client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", **kwargs)


@dataclass
class User:
    id: uuid.UUID
    email: str
    session: str
    auth: httpx.AsyncClient  # to the auth app, with the session cookie
    catalog: httpx.AsyncClient  # to the catalog app, with the session cookie
    world: World

    async def api_key(self, scopes: list[str] | None = None, org_slug: str | None = None) -> str:
        body: dict[str, Any] = {"name": "test key"}
        if scopes is not None:
            body["scopes"] = scopes
        if org_slug is not None:
            body["org_slug"] = org_slug
        resp = await self.auth.post("/auth/api-keys", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])

    async def key_client(
        self, scopes: list[str] | None = None, org_slug: str | None = None
    ) -> httpx.AsyncClient:
        key = await self.api_key(scopes, org_slug)
        return self.world.catalog_client(headers={"Authorization": f"Bearer {key}"})

    async def create_agent(self, path: str = "/users/me/agents", **body: Any) -> dict[str, Any]:
        body.setdefault("config", {"name": unique("agent")})
        resp = await self.catalog.post(path, json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@dataclass
class World:
    """Factory of users and orgs; closes every client it made."""

    auth_app: FastAPI
    catalog_app: FastAPI
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def catalog_client(self, **kwargs: Any) -> httpx.AsyncClient:
        made = client(self.catalog_app, **kwargs)
        self.clients.append(made)
        return made

    async def user(self, tag: str = "user") -> User:
        auth = client(self.auth_app)
        self.clients.append(auth)
        email = f"{unique(tag)}@example.com"
        resp = await auth.post("/auth/signup", json={"email": email, "password": PASSWORD, "name": tag})
        assert resp.status_code == 201, resp.text
        session = auth.cookies[COOKIE]
        me = await auth.get("/users/me")
        assert me.status_code == 200, me.text
        catalog = self.catalog_client(cookies={COOKIE: session})
        return User(uuid.UUID(me.json()["id"]), email, session, auth, catalog, self)

    async def org(self, owner: User, members: dict[str, User] | None = None) -> tuple[str, uuid.UUID]:
        """A new org owned by `owner`, with `members` as {role: user}."""
        slug = unique("org")
        resp = await owner.auth.post("/orgs", json={"name": "Test org", "slug": slug})
        assert resp.status_code == 201, resp.text
        for role, user in (members or {}).items():
            added = await owner.auth.post(
                f"/orgs/{slug}/members", json={"user_id": str(user.id), "role": role}
            )
            assert added.status_code == 201, added.text
        return slug, uuid.UUID(resp.json()["id"])

    async def close(self) -> None:
        for made in self.clients:
            await made.aclose()


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "data": data}


def edge(source: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **extra}


def blueprint(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], name: str = "main") -> dict[str, Any]:
    return {"version": "1", "entries": [{"name": name, "workflow": {"nodes": nodes, "edges": edges}}]}


def valid_blueprint() -> dict[str, Any]:
    """START → DIALOG → END: the smallest graph that runs."""
    return blueprint(
        [
            node("start", "CONTROL.START", greeting="Hello {{ name }}"),
            node("talk", "CONTROL.DIALOG", prompt="Help the user."),
            node("end", "CONTROL.END", message="Bye"),
        ],
        [edge("start", "talk"), edge("talk", "end")],
    )
