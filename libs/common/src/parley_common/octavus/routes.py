"""Octavus-compatible routes: Bearer API keys; errors as the `Error` envelope plus `"error"`.

@octavus/cli 2.0.0 prints only `body.error` of an error response (and the server SDK reads
`error`, then `message`), so these routes add that key. The route class renders any exception
raised while handling the request (auth, body validation, the handler) with the app's own
exception handlers, then adds `error`: the envelope's fields stay as every other route has them.
Responses made before routing (body too large, unknown path) keep the plain envelope.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ParleyError

MAX_CREDENTIAL = 4096
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_DROPPED_HEADERS = {"content-length", "content-type"}


async def _render(request: Request, exc: Exception) -> Response | None:
    handlers: dict[Any, Callable[..., Any]] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            assert isinstance(response, Response)
            return response
    return None


def with_error_key(response: Response) -> Response:
    """The same response, with `error` copied from the envelope's `message`."""
    try:
        body = json.loads(bytes(response.body))
    except ValueError:
        return response
    if not isinstance(body, dict) or "message" not in body:
        return response
    body["error"] = body["message"]
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED_HEADERS}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


class OctavusRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except Exception as exc:
                response = await _render(request, exc)
                if response is None:
                    raise
                return with_error_key(response)

        return handler


def bearer_key(request: Request) -> str:
    """The `Authorization: Bearer <key>` the CLI and the server SDK send (nothing else is taken)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    key = value.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_CREDENTIAL:
        raise ParleyError(Codes.UNAUTHENTICATED, "An API key is required: send Authorization: Bearer <key>.")
    return key


async def api_key_principal(auth: AuthClient, request: Request, scope: str) -> Principal:
    """The principal of the request's Bearer API key, which must hold `scope` (verified over the
    bus by auth; browser sessions and client tokens do not reach the Octavus routes)."""
    principal = await auth.verify(bearer_key(request), CredentialKind.API_KEY)
    if principal.kind is not CredentialKind.API_KEY or principal.user_id is None:
        raise ParleyError(Codes.UNAUTHENTICATED, "These endpoints take an API key.")
    if not principal.has_scope(scope):
        raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": scope})
    return principal
