"""`/chat/ws`: the chat WebSocket of scoped client tokens (protocol in docs/chat-ws.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from parley_common.errors import Codes, ParleyError
from parley_session_gateway.chat.connection import ChatConnection
from parley_session_gateway.socket_route import socket_route

router = APIRouter(tags=["chat"])


@socket_route(
    router,
    "/chat/ws",
    ChatConnection,
    resume_query="session_id",
    operation_id="chatWebSocket",
    summary="Chat with an agent (WebSocket, scoped client token)",
    begins="the chat session begins.",
)
async def chat_ws_http(
    token: str | None = Query(default=None, description="Chat client token from POST /chat/tokens."),
    session_id: str | None = Query(
        default=None, description="A session to resume after a dropped socket (its `connected.session_id`)."
    ),
    last_event: int = Query(
        default=0, ge=0, description="With session_id: the `seq` of the last session event received."
    ),
) -> None:
    """Open with a WebSocket upgrade and `?token=` (a chat client token; its `workflow_id` is the
    agent). The server sends `connected` {session_id}; the client sends `message` {content, id?}
    and `token-refresh` {token}; the server streams `response-start` / `response-chunk` /
    `response-end`, acknowledges with `message-ack` / `message-error`, sends `heartbeat`s,
    `token-refresh-required` before expiry, and `session-closed` at the end. With `?session_id=`
    and `?last_event=` a client resumes its session after a dropped socket and gets exactly the
    events it missed (each session event carries its `seq`). See docs/chat-ws.md. Without an
    upgrade this answers 426.
    """
    raise ParleyError(Codes.REALTIME_UPGRADE_REQUIRED)
