"""The Authenticator's rules in isolation (over the real stack: the services' fence tests).

A unit test of the dependency: credentials map to principals through a table standing in for
auth's verification, so each rule (reading, length cap, kind, org fence, scopes) shows on its own.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.authenticator import Authenticator, install_authenticator
from parley_common.errors import Codes, ParleyError
from parley_common.http import create_app
from parley_common.settings import CommonSettings

USER = uuid.uuid4()
AccountReader = Annotated[Principal, Depends(Authenticator(required_scopes={"account:read"}, org_keys=False))]
AgentsReader = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:read"}))]
OctavusReader = Annotated[
    Principal, Depends(Authenticator(required_scopes={"agents:read"}, api_key_header=True))
]


def principal(kind: CredentialKind, *, org: bool = False, scopes: list[str] | None = None) -> Principal:
    return Principal(
        kind=kind,
        credential_id=uuid.uuid4(),
        user_id=USER,
        org_id=uuid.uuid4() if org else None,
        scopes=scopes if scopes is not None else ["*"],
    )


class TableVerifier:
    def __init__(self) -> None:
        self.table = {
            "session": principal(CredentialKind.SESSION),
            "sk_live_personal": principal(CredentialKind.API_KEY),
            "sk_live_org": principal(CredentialKind.API_KEY, org=True),
            "sk_live_reader": principal(CredentialKind.API_KEY, scopes=["agents:read"]),
            "a.b.c": principal(CredentialKind.CLIENT_TOKEN, scopes=["chat:connect"]),
        }
        self.calls: list[tuple[str, CredentialKind | None]] = []

    async def verify(self, credential: str, kind: CredentialKind | None = None) -> Principal:
        self.calls.append((credential, kind))
        found = self.table.get(credential)
        if found is None or (kind is not None and found.kind is not kind):
            raise ParleyError(Codes.UNAUTHENTICATED)
        return found


@pytest.fixture
def verifier() -> TableVerifier:
    return TableVerifier()


@pytest.fixture
async def client(verifier: TableVerifier) -> httpx.AsyncClient:
    app: FastAPI = create_app(CommonSettings(), title="t")
    install_authenticator(app, verifier, cookie_name="kivox_session")

    @app.get("/account")
    async def account_route(p: AccountReader) -> str:
        return p.kind.value

    @app.get("/agents")
    async def agents_route(p: AgentsReader) -> str:
        return p.kind.value

    @app.get("/octavus")
    async def octavus_route(p: OctavusReader) -> str:
        return p.kind.value

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def call(
    client: httpx.AsyncClient, path: str, bearer: str | None = None, cookie: str | None = None
) -> str:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if cookie:
        headers["Cookie"] = f"kivox_session={cookie}"
    resp = await client.get(path, headers=headers)
    return f"{resp.status_code} {resp.json() if resp.status_code == 200 else resp.json()['code']}"


async def test_account_routes(client: httpx.AsyncClient) -> None:
    assert await call(client, "/account") == "401 auth.unauthenticated"
    assert await call(client, "/account", cookie="session") == "200 session"
    assert await call(client, "/account", bearer="sk_live_personal") == "200 api_key"
    assert await call(client, "/account", bearer="sk_live_org") == "403 auth.forbidden"
    assert await call(client, "/account", bearer="a.b.c") == "403 auth.forbidden"
    assert await call(client, "/account", bearer="sk_live_reader") == "403 auth.insufficient_scope"
    assert await call(client, "/account", bearer="x" * 4097) == "401 auth.unauthenticated"
    # A bearer header wins over the cookie.
    assert await call(client, "/account", bearer="sk_live_org", cookie="session") == "403 auth.forbidden"


async def test_org_keys_pass_where_the_resource_decides(client: httpx.AsyncClient) -> None:
    assert await call(client, "/agents", bearer="sk_live_org") == "200 api_key"
    assert await call(client, "/agents", bearer="sk_live_reader") == "200 api_key"
    assert await call(client, "/agents", bearer="a.b.c") == "403 auth.forbidden"


async def test_octavus_routes_read_only_a_bearer_api_key(
    client: httpx.AsyncClient, verifier: TableVerifier
) -> None:
    assert await call(client, "/octavus", cookie="session") == "401 auth.unauthenticated"
    assert await call(client, "/octavus", bearer="session") == "401 auth.unauthenticated"
    assert await call(client, "/octavus", bearer="a.b.c") == "401 auth.unauthenticated"
    assert await call(client, "/octavus", bearer="sk_live_org") == "200 api_key"
    # Verified as API keys, whatever they look like.
    assert {kind for _, kind in verifier.calls} == {CredentialKind.API_KEY}
