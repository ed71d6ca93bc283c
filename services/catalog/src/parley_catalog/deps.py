"""FastAPI dependencies: context, database session, and who is calling (verified by auth over the bus)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.context import CatalogContext
from parley_common.auth_contract import Principal
from parley_common.authenticator import Authenticator
from parley_common.kit.deps import app_context, db_session

Ctx = Annotated[CatalogContext, Depends(app_context)]
Db = Annotated[AsyncSession, Depends(db_session)]


# Management routes take a browser session or an API key holding the scope; client tokens (for end
# users talking to one agent, `catalog.agent.access`) never get in. Routes that name an org or a
# resource let an org's API key in and fence it there; `/users/me/...` routes do not (their
# dependency is owner.USER's).
AgentsReader = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:read"}))]
AgentsWriter = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:write"}))]
HistoryReader = Annotated[Principal, Depends(Authenticator(required_scopes={"conversations:read"}))]
