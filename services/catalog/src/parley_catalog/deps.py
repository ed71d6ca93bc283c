"""FastAPI dependencies: context, database session, and who is calling (verified by auth over the bus)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.context import CatalogContext
from parley_common.auth_contract import Principal
from parley_common.authenticator import Authenticator


def get_ctx(request: Request) -> CatalogContext:
    ctx: CatalogContext = request.app.state.ctx
    return ctx


Ctx = Annotated[CatalogContext, Depends(get_ctx)]


async def get_db(ctx: Ctx) -> AsyncIterator[AsyncSession]:
    async with ctx.db.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]


# Management routes take a browser session or an API key holding the scope; client tokens (for end
# users talking to one agent, `catalog.agent.access`) never get in. Routes that name an org or a
# resource let an org's API key in and fence it there; `/users/me/...` routes do not.
AgentsReader = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:read"}))]
AgentsWriter = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:write"}))]
HistoryReader = Annotated[Principal, Depends(Authenticator(required_scopes={"conversations:read"}))]
PersonalReader = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:read"}, org_keys=False))]
PersonalWriter = Annotated[
    Principal, Depends(Authenticator(required_scopes={"agents:write"}, org_keys=False))
]
