"""Helpers shared by the auth tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from faststream.nats import NatsBroker

from parley_common.auth_client import AuthClient
from parley_common.bus import make_broker
from parley_common.settings import CommonSettings
from parley_devstack.testing import assert_error

_counter = itertools.count()


def new_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", **kwargs)


@asynccontextmanager
async def bus_peer(nats_url: str, *, cache_ttl_s: float) -> AsyncIterator[tuple[NatsBroker, AuthClient]]:
    """A broker and auth client as in another service."""
    broker = make_broker(CommonSettings(nats_url=nats_url, service_name="peer"))
    client = AuthClient(broker, cache_ttl_s=cache_ttl_s)  # subscribes: before the broker starts
    await broker.start()
    try:
        yield broker, client
    finally:
        await broker.stop()


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{next(_counter)}-{uuid.uuid4().hex[:8]}@example.com"


@dataclass
class Account:
    client: httpx.AsyncClient  # carries the session cookie
    id: uuid.UUID
    email: str
    password: str

    async def api_key(self, scopes: list[str] | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {"name": "test key", **extra}
        if scopes is not None:
            body["scopes"] = scopes
        resp = await self.client.post("/auth/api-keys", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])


class Accounts:
    """Factory of signed-up users, each with its own cookie jar."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.clients: list[httpx.AsyncClient] = []

    async def create(self, tag: str = "user", password: str = "correct horse battery") -> Account:
        client = new_client(self.app)
        self.clients.append(client)
        email = unique_email(tag)
        resp = await client.post("/auth/signup", json={"email": email, "password": password, "name": tag})
        assert resp.status_code == 201, resp.text
        me = await client.get("/users/me")
        assert me.status_code == 200, me.text
        return Account(client=client, id=uuid.UUID(me.json()["id"]), email=email, password=password)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


assert_envelope = assert_error


def mail_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))
