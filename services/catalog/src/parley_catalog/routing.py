"""How the catalog declares its routes.

- `contract_router`: `ContractRoute` (None fields left out of every response, the response model
  from the return annotation) and the operation id from the endpoint's name (`operation_ids`): an
  endpoint `list_agent_conversations` is the operation `listAgentConversations`, so the contract's
  operation id is written once, as the function's name. Routes registered for several owners
  (`owner.owner_routes`) give theirs explicitly; the Octavus router prefixes its own (`octavus`).
- `deleting`: a DELETE answered 204 with no body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.routing import APIRoute

from parley_common.kit.routes import ContractRoute


def operation_ids(prefix: str = "") -> Callable[[APIRoute], str]:
    """The operation id of a route: its endpoint's name in camelCase after `prefix`, `get_agent` →
    `getAgent` (with the prefix `octavus`: `octavusGetAgent`)."""

    def operation_id(route: APIRoute) -> str:
        head, *rest = [prefix, *route.name.split("_")] if prefix else route.name.split("_")
        return head + "".join(word.capitalize() for word in rest)

    return operation_id


def contract_router(tag: str) -> APIRouter:
    return APIRouter(tags=[tag], route_class=ContractRoute, generate_unique_id_function=operation_ids())


def deleting(
    router: APIRouter, path: str, *, summary: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`DELETE path` on `router`: once the endpoint returns (`None`), 204 with no body."""
    return router.delete(
        path, status_code=status.HTTP_204_NO_CONTENT, response_class=Response, summary=summary
    )
