"""What every router of auth's HTTP API shares: each serves operations of the Kivox contract.

- Responses leave out `None` fields instead of sending `null` (`ContractRoute`).
- An operation's id is its endpoint function's name in camelCase (`list_api_keys` → `listAPIKeys`),
  the name a generated client gives the call: name an endpoint after its contract operation.
- A 204 answer is `no_content()`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.routing import APIRoute

from parley_common.kit.routes import ContractRoute

# Words the contract's operation ids spell in capitals.
ACRONYMS = {"api": "API"}


def operation_id(route: APIRoute) -> str:
    first, *rest = route.name.split("_")
    return first + "".join(ACRONYMS.get(word, word.capitalize()) for word in rest)


def contract_router(*tags: str) -> APIRouter:
    return APIRouter(
        tags=list(tags) or None, route_class=ContractRoute, generate_unique_id_function=operation_id
    )


def no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)
