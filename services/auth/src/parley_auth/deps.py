"""FastAPI dependencies: request context, database session, and who is calling.

Who may call a route is declared with `parley_common.authenticator.Authenticator`; auth verifies
credentials in-process (`LocalVerifier`), every other service over the bus.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.accounts.models import User
from parley_auth.context import AuthContext
from parley_auth.verification import verify_credential
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.authenticator import Authenticator
from parley_common.errors import Codes, ParleyError
from parley_common.kit.deps import app_context, db_session

Ctx = Annotated[AuthContext, Depends(app_context)]
Db = Annotated[AsyncSession, Depends(db_session)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class LocalVerifier:
    """Credentials verified against auth's own tables, in a database session of their own."""

    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def verify(self, credential: str, kind: CredentialKind | None = None) -> Principal:
        async with self.ctx.db.sessions() as db:
            return await verify_credential(db, self.ctx.settings, credential, kind)


# The account itself (profile, email, sessions, deletion): a browser session or a personal API key.
AccountReader = Annotated[Principal, Depends(Authenticator(required_scopes={"account:read"}, org_keys=False))]
AccountWriter = Annotated[
    Principal, Depends(Authenticator(required_scopes={"account:write"}, org_keys=False))
]
# Orgs and API keys: an org's API key gets in, and each route fences it to its own org.
OrgReader = Annotated[Principal, Depends(Authenticator(required_scopes={"account:read"}))]
OrgWriter = Annotated[Principal, Depends(Authenticator(required_scopes={"account:write"}))]
KeysReader = Annotated[Principal, Depends(Authenticator(required_scopes={"account:read"}))]
KeysWriter = Annotated[Principal, Depends(Authenticator(required_scopes={"keys:write"}))]
# Logging out this session: the session itself (an API key is no session; 401 as it always was).
CurrentSession = Annotated[
    Principal,
    Depends(Authenticator(allowed_kinds={CredentialKind.SESSION}, wrong_kind=Codes.UNAUTHENTICATED)),
]
# Client tokens are minted server-side, with an API key (personal or an org's) holding tokens:mint.
Minter = Annotated[
    Principal,
    Depends(Authenticator(required_scopes={"tokens:mint"}, allowed_kinds={CredentialKind.API_KEY})),
]


async def load_user(db: AsyncSession, principal: Principal) -> User:
    user = await db.get(User, principal.user_id) if principal.user_id else None
    if user is None or user.deleted_at is not None:
        raise ParleyError(Codes.UNAUTHENTICATED)
    return user
