"""Who calls the Octavus routes: a Bearer API key only, verified by auth over the bus.

The CLI and the server SDK send `Authorization: Bearer <key>`; browser sessions and client tokens
do not reach these routes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from parley_catalog.deps import Ctx
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ParleyError
from parley_common.octavus.routes import bearer_key


def api_key(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the principal of a valid API key that holds `scope`."""

    async def dep(request: Request, ctx: Ctx) -> Principal:
        principal = await ctx.auth.verify(bearer_key(request), CredentialKind.API_KEY)
        if principal.kind is not CredentialKind.API_KEY or principal.user_id is None:
            raise ParleyError(Codes.UNAUTHENTICATED, "These endpoints take an API key.")
        if not principal.has_scope(scope):
            raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": scope})
        return principal

    return dep


KeyReader = Annotated[Principal, Depends(api_key("agents:read"))]
KeyWriter = Annotated[Principal, Depends(api_key("agents:write"))]
