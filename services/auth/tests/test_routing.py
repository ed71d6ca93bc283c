"""auth's contract routers: operation ids come from endpoint names, and `None` fields are left out."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from parley_auth.routing import contract_router


def _operation_ids(app: FastAPI) -> dict[str, str]:
    return {
        f"{method} {path}": op["operationId"]
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    }


class Thing(BaseModel):
    name: str
    note: str | None = None


async def test_a_contract_router_names_operations_after_endpoints_and_leaves_out_none() -> None:
    router = contract_router("t")

    @router.get("/a")
    async def list_api_keys() -> list[Thing]:
        return [Thing(name="k")]

    @router.get("/b")
    async def signup() -> Thing:
        return Thing(name="s", note="n")

    @router.get("/c", operation_id="explicitWins")
    async def update_my_email() -> None: ...

    app = FastAPI()
    app.include_router(router)
    assert _operation_ids(app) == {"get /a": "listAPIKeys", "get /b": "signup", "get /c": "explicitWins"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/a")).json() == [{"name": "k"}]
        assert (await client.get("/b")).json() == {"name": "s", "note": "n"}


def test_auth_endpoints_are_named_after_their_contract_operations(auth_app: FastAPI) -> None:
    ids = _operation_ids(auth_app)
    assert ids["post /auth/sessions"] == "createSession"
    assert ids["delete /auth/sessions"] == "revokeAllSessions"
    assert ids["delete /auth/sessions/me"] == "revokeSession"
    assert ids["get /orgs/{orgSlug}/members"] == "listOrgMembers"
    assert ids["delete /orgs/{orgSlug}/members/{userID}"] == "removeOrgMember"
    assert ids["get /auth/api-keys"] == "listAPIKeys"
    assert ids["delete /auth/api-keys/{keyID}"] == "revokeAPIKey"
    assert ids["patch /users/me/email"] == "updateMyEmail"
