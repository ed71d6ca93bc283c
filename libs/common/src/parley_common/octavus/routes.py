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

from parley_common.authenticator import Authenticator

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


def api_key(*scopes: str) -> Authenticator:
    """Who calls an Octavus route: the `Authorization: Bearer <key>` the CLI and the server SDK send,
    an API key holding `scopes` (browser sessions and client tokens do not reach these routes)."""
    return Authenticator(required_scopes=scopes, api_key_header=True)
