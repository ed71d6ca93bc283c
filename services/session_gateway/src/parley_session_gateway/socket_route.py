"""What the two socket routes share: the WebSocket itself and the documented HTTP `GET` of its path.

`/realtime` (Kivox) and `/chat/ws` are one `SessionConnection` subclass each, served the same way:
the socket runs the connection (resuming what its resume query parameter names), and a plain
`GET` of the same path, documented with the protocol in its docstring, answers 426.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, WebSocket
from starlette.status import WS_1008_POLICY_VIOLATION

from parley_common.http import ERROR_RESPONSES
from parley_session_gateway.connection import SessionConnection
from parley_session_gateway.deps import BadResumeQuery, gateway, resume_of
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

    async def websocket_endpoint(websocket: WebSocket) -> None:
        # A plain Starlette route: FastAPI's dependency solving was ~half of what routing a socket
        # to its endpoint cost (deps.resume_of).
        try:
            resume = resume_of(websocket.query_params, resume_query)
        except BadResumeQuery as exc:
            await websocket.close(WS_1008_POLICY_VIOLATION, str(exc))
            return
        await connection(gateway(websocket), websocket, resume).run()

    router.add_websocket_route(path, websocket_endpoint)
    return router.get(
        path,
        operation_id=operation_id,
        summary=summary,
        responses={426: ERROR_RESPONSES["default"]},
        status_code=101,
        response_description=f"Switching Protocols: {begins}",
    )
