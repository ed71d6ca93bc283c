"""The two FastAPI dependencies every service with a context (and a database) declares.

A service's `app.py` puts its context object on `app.state.ctx` (a `Database` at `ctx.db` when it
has one); its `deps.py` names the types:

    Ctx = Annotated[CatalogContext, Depends(app_context)]
    Db = Annotated[AsyncSession, Depends(db_session)]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession


def app_context(request: Request) -> Any:
    """The service's context object (`app.state.ctx`)."""
    return request.app.state.ctx


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A database session for the request, closed after the response."""
    async with request.app.state.ctx.db.sessions() as session:
        yield session
