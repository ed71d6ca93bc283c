"""`/chat/ws`: the chat WebSocket of scoped client tokens (protocol in docs/chat-ws.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query, WebSocket

from parley_common.errors import Codes, ParleyError
from parley_common.http import ERROR_RESPONSES
from parley_session_gateway.chat.connection import ChatConnection
from parley_session_gateway.sessions import GatewayContext

router = APIRouter(tags=["chat"])


@router.websocket("/chat/ws")
async def chat_ws(websocket: WebSocket) -> None:
    ctx: GatewayContext = websocket.app.state.realtime
    await ChatConnection(ctx, websocket).run()


@router.get(
    "/chat/ws",
    operation_id="chatWebSocket",
    summary="Chat with an agent (WebSocket, scoped client token)",
    responses={426: ERROR_RESPONSES["default"]},
    status_code=101,
    response_description="Switching Protocols: the chat session begins.",
)
async def chat_ws_http(
    token: str | None = Query(default=None, description="Chat client token from POST /chat/tokens."),
) -> None:
    """Open with a WebSocket upgrade and `?token=` (a chat client token; its `workflow_id` is the
    agent). The server sends `connected` {session_id}; the client sends `message` {content, id?}
    and `token-refresh` {token}; the server streams `response-start` / `response-chunk` /
    `response-end`, acknowledges with `message-ack` / `message-error`, sends `heartbeat`s,
    `token-refresh-required` before expiry, and `session-closed` at the end. See docs/chat-ws.md.
    Without an upgrade this answers 426.
    """
    raise ParleyError(Codes.REALTIME_UPGRADE_REQUIRED)
