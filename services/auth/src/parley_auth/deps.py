"""FastAPI dependencies: request context, database session, and who is calling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.accounts.models import User
from parley_auth.context import AuthContext
from parley_auth.verification import verify_credential
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ParleyError


def get_ctx(request: Request) -> AuthContext:
    ctx: AuthContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AuthContext, Depends(get_ctx)]


async def get_db(ctx: Ctx) -> AsyncIterator[AsyncSession]:
    async with ctx.db.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def credential_from_request(request: Request, cookie_name: str) -> tuple[str, CredentialKind | None] | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    cookie = request.cookies.get(cookie_name)
    if cookie:
        return cookie, CredentialKind.SESSION
    return None


async def current_principal(request: Request, ctx: Ctx, db: Db) -> Principal:
    found = credential_from_request(request, ctx.settings.auth_cookie_name)
    if found is None:
        raise ParleyError(Codes.UNAUTHENTICATED)
    credential, kind = found
    if len(credential) > 4096:
        raise ParleyError(Codes.UNAUTHENTICATED)
    return await verify_credential(db, ctx.settings, credential, kind)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: an account-level caller (session or API key) holding `scope`.

    Client tokens are for end users talking to one agent; they never reach account endpoints.
    """

    async def dep(principal: CurrentPrincipal) -> Principal:
        if principal.kind is CredentialKind.CLIENT_TOKEN:
            raise ParleyError(Codes.FORBIDDEN, "Client tokens cannot call account endpoints.")
        if not principal.has_scope(scope):
            raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": scope})
        return principal

    return dep


async def load_user(db: AsyncSession, principal: Principal) -> User:
    user = await db.get(User, principal.user_id) if principal.user_id else None
    if user is None or user.deleted_at is not None:
        raise ParleyError(Codes.UNAUTHENTICATED)
    return user
