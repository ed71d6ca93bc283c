"""The resource a route names by its id, loaded and authorized as a FastAPI dependency.

`GET /agents/{agentID}` and `DELETE /agents/{agentID}` (and the same for templates, tools,
conversations, adversarial tests and their runs) each took the id, the context, the session and
the caller, then loaded the row for a role. An endpoint now takes the loaded row instead:

    ViewedAgent = Annotated[Agent, loaded(agents.load_for, AgentID, AgentsReader, MemberRole.VIEWER)]

    async def get_agent(agent: ViewedAgent) -> schemas.Agent: ...

The dependency resolves the caller first and then the id, as the endpoints did, so a missing
credential is still 401 before a malformed id is 422. `loaded` loads before the endpoint's other
parameters are read: use it where the id is the route's only input (no body, no other query or
path parameter), so a 422 on another input never turns into a 404. Elsewhere `loader` gives the
endpoint a function that loads the row when awaited, after FastAPI has read every input:

    async def update_agent(load: Loader[Agent], body: schemas.UpdateAgentRequest, ...):
        agent = await load()
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.context import CatalogContext
from parley_catalog.deps import Ctx, Db
from parley_common.auth_contract import MemberRole, Principal

T = TypeVar("T")

# (ctx, db, caller, id, min_role) -> the row; 404 when the caller may not see it, 403 below the role.
Load = Callable[[CatalogContext, AsyncSession, Principal, UUID, MemberRole], Awaitable[T]]
# The row, loaded when awaited.
Loader = Callable[[], Awaitable[T]]


def loaded(load: Load[T], id_param: Any, caller: Any, min_role: MemberRole) -> Any:
    """`Depends(...)` of `load(ctx, db, caller, id, min_role)`, with the id read as `id_param`
    (an `Annotated` path or query parameter, named by its alias) and the caller as `caller` (an
    `Annotated` principal dependency: the scope the route requires)."""

    async def dependency(row_id: UUID, ctx: CatalogContext, db: AsyncSession, principal: Principal) -> T:
        return await load(ctx, db, principal, row_id, min_role)

    return _with_parameters(dependency, id_param, caller)


def loader(load: Load[T], id_param: Any, caller: Any, min_role: MemberRole) -> Any:
    """`loaded`, deferred: the dependency is a `Loader` that the endpoint awaits."""

    async def dependency(
        row_id: UUID, ctx: CatalogContext, db: AsyncSession, principal: Principal
    ) -> Loader[T]:
        return lambda: load(ctx, db, principal, row_id, min_role)

    return _with_parameters(dependency, id_param, caller)


def _with_parameters(dependency: Callable[..., Awaitable[Any]], id_param: Any, caller: Any) -> Any:
    keyword = inspect.Parameter.KEYWORD_ONLY
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("ctx", keyword, annotation=Ctx),
            inspect.Parameter("db", keyword, annotation=Db),
            inspect.Parameter("principal", keyword, annotation=caller),
            inspect.Parameter("row_id", keyword, annotation=id_param),
        ]
    )
    return Depends(dependency)
