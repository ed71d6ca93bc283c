"""Who calls the Octavus routes: a Bearer API key only, verified by auth over the bus.

The CLI and the server SDK send `Authorization: Bearer <key>`; browser sessions and client tokens
do not reach these routes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from parley_catalog.deps import Ctx
from parley_common.auth_contract import Principal
from parley_common.octavus.routes import api_key_principal


def api_key(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the principal of a valid API key that holds `scope`."""

    async def dep(request: Request, ctx: Ctx) -> Principal:
        return await api_key_principal(ctx.auth, request, scope)

    return dep


KeyReader = Annotated[Principal, Depends(api_key("agents:read"))]
KeyWriter = Annotated[Principal, Depends(api_key("agents:write"))]
