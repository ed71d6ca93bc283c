"""`ContractRoute`: the route class of routers that serve a published client contract.

The SDKs' types mark absent fields as optional, not nullable, so a response leaves out every
field that is `None` instead of sending `null`. Set once on the router
(`APIRouter(route_class=ContractRoute)`) rather than as `response_model_exclude_none=True` on
each route; the response model itself comes from the endpoint's return annotation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute


class ContractRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model_exclude_none"] = True
        super().__init__(path, endpoint, **kwargs)
