"""`/realtime`: the Kivox realtime WebSocket (protocol in docs/realtime.md)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from parley_common.errors import Codes, ParleyError
from parley_session_gateway.realtime.connection import RealtimeConnection
from parley_session_gateway.socket_route import socket_route

router = APIRouter(tags=["realtime"])


@socket_route(
    router,
    "/realtime",
    RealtimeConnection,
    resume_query="resume",
    operation_id="realtimeWebSocket",
    summary="Kivox realtime conversation (WebSocket)",
    begins="the WebSocket session begins.",
)
async def realtime_http(
    token: str | None = Query(
        default=None, description="API key or scoped client token (browsers cannot set headers)."
    ),
    resume: str | None = Query(default=None, description="Conversation to resume after a dropped socket."),
    last_event: int = Query(default=0, ge=0, description="Events of that conversation already received."),
) -> None:
    """Open with a WebSocket upgrade; the credential is the `kivox_session` cookie or `?token=`.

    The first message must be `handshake` (`agent_id`, optional `channel` and `render_directive`);
    the server answers `handshake_ok` with the new `conversation_id`, or `handshake_error` with a
    reason (an error code) and closes. Then the client sends `input_text`, `input_audio` /
    `input_audio_stream` (each followed by binary audio frames), `cancel` and `end`; the server
    streams `text_delta`, `text_full`, `audio_delta` (plus a binary frame), `turn_complete`,
    `flow_complete`, `signal`, `transfer`, `error`, a `tick` every second and finally
    `session_closed`. See docs/realtime.md. Without an upgrade this answers 426.
    """
    raise ParleyError(Codes.REALTIME_UPGRADE_REQUIRED)
