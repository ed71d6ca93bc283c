"""What the two socket routes share: the WebSocket itself and the documented HTTP `GET` of its path.

`/realtime` (Kivox) and `/chat/ws` are one `SessionConnection` subclass each, served the same way:
the socket runs the connection (resuming what its resume query parameter names), and a plain
`GET` of the same path, documented with the protocol in its docstring, answers 426.
"""

# No `from __future__ import annotations`: FastAPI reads the socket endpoint's annotations, which
# name this call's `resume_query`, so they are evaluated where the endpoint is defined.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket

from parley_common.http import ERROR_RESPONSES
from parley_session_gateway.connection import SessionConnection
from parley_session_gateway.deps import Gateway, resume_from
from parley_session_gateway.resume import Resume
from parley_session_gateway.sessions import GatewayContext

Connection = Callable[[GatewayContext, WebSocket, Resume | None], SessionConnection]
Upgrade = Callable[..., Awaitable[None]]


def socket_route(
    router: APIRouter,
    path: str,
    connection: Connection,
    *,
    resume_query: str,
    operation_id: str,
    summary: str,
    begins: str,
) -> Callable[[Upgrade], Upgrade]:
    """Serve `connection` as the WebSocket at `path`; the decorated function (its query parameters
    and docstring are the protocol's documentation) becomes that path's `GET`, which answers 426
    (`begins`: what the switch of protocols starts)."""

    async def websocket_endpoint(
        websocket: WebSocket,
        ctx: Gateway,
        resume: Annotated[Resume | None, Depends(resume_from(resume_query))],
    ) -> None:
        await connection(ctx, websocket, resume).run()

    router.add_api_websocket_route(path, websocket_endpoint)
    return router.get(
        path,
        operation_id=operation_id,
        summary=summary,
        responses={426: ERROR_RESPONSES["default"]},
        status_code=101,
        response_description=f"Switching Protocols: {begins}",
    )
