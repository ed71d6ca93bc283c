"""FastAPI dependencies: context, database session, and who is calling (verified by auth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.context import CatalogContext
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ParleyError


def get_ctx(request: Request) -> CatalogContext:
    ctx: CatalogContext = request.app.state.ctx
    return ctx


Ctx = Annotated[CatalogContext, Depends(get_ctx)]


async def get_db(ctx: Ctx) -> AsyncIterator[AsyncSession]:
    async with ctx.db.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]


async def current_principal(request: Request, ctx: Ctx) -> Principal:
    """The caller, verified over the bus by auth (`auth.verify`): bearer credential or cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    credential: str | None = None
    kind: CredentialKind | None = None
    if scheme.lower() == "bearer" and value.strip():
        credential = value.strip()
    elif cookie := request.cookies.get(ctx.settings.catalog_cookie_name):
        credential, kind = cookie, CredentialKind.SESSION
    if not credential or len(credential) > 4096:
        raise ParleyError(Codes.UNAUTHENTICATED)
    return await ctx.auth.verify(credential, kind)


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: an account-level caller (session or API key) holding `scope`.

    Client tokens are for end users talking to one agent (`catalog.agent.access`); they never
    reach the management API.
    """

    async def dep(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.kind is CredentialKind.CLIENT_TOKEN or principal.user_id is None:
            raise ParleyError(Codes.FORBIDDEN, "Client tokens cannot call the management API.")
        if not principal.has_scope(scope):
            raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": scope})
        return principal

    return dep


AgentsReader = Annotated[Principal, Depends(require_scope("agents:read"))]
AgentsWriter = Annotated[Principal, Depends(require_scope("agents:write"))]
HistoryReader = Annotated[Principal, Depends(require_scope("conversations:read"))]
