"""A call's `/realtime` socket: opened as a Kivox voice client (channel `web-voice`) with the call's
client token, so every rule of that socket (the credential, the agent's access, rate limits,
revocation) holds for the call too."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from opentelemetry import propagate
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from parley_common.errors import REGISTRY, Codes, ParleyError
from parley_common.media_contract import WEB_VOICE_CHANNEL, MediaOfferRequest
from parley_media.settings import MediaSettings

log = structlog.get_logger(__name__)


async def open_realtime(
    settings: MediaSettings, request: MediaOfferRequest, log_fields: dict[str, Any]
) -> tuple[ClientConnection, str]:
    """The socket, its handshake answered, and the conversation's id. Unreachable, or refused:
    a ParleyError (the gateway's own code for a refusal), and no socket left open."""
    s = settings
    headers = {"Authorization": f"Bearer {request.token.get_secret_value()}"}
    # The call's socket continues the offer's trace (HTTP → bus → here → /realtime).
    propagate.inject(headers)
    try:
        async with asyncio.timeout(s.media_handshake_timeout_s):
            ws = await connect(
                s.media_gateway_url,
                additional_headers=headers,
                max_size=16 * 1024 * 1024,
                open_timeout=s.media_handshake_timeout_s,
                ping_interval=20,
                ping_timeout=20,
            )
    except (OSError, TimeoutError, InvalidStatus, WebSocketException) as exc:
        log.warning("media.gateway_unreachable", error=type(exc).__name__, **log_fields)
        raise ParleyError(Codes.WEBRTC_MEDIA_UNAVAILABLE) from exc
    try:
        return ws, await _handshake(ws, s, request, log_fields)
    except BaseException:
        with contextlib.suppress(Exception):
            await ws.close()
        raise


async def _handshake(
    ws: ClientConnection, s: MediaSettings, request: MediaOfferRequest, log_fields: dict[str, Any]
) -> str:
    handshake: dict[str, Any] = {
        "type": "handshake",
        "agent_id": request.agent_id,
        "channel": WEB_VOICE_CHANNEL,
    }
    if request.render_directive:
        handshake["render_directive"] = request.render_directive
    try:
        await ws.send(json.dumps(handshake))
        async with asyncio.timeout(s.media_handshake_timeout_s):
            first = await ws.recv()
    except (ConnectionClosed, TimeoutError) as exc:
        raise ParleyError(Codes.WEBRTC_MEDIA_UNAVAILABLE) from exc
    try:
        reply = json.loads(first)
    except (TypeError, ValueError):
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    if reply.get("type") == "handshake_ok" and isinstance(reply.get("conversation_id"), str):
        return str(reply["conversation_id"])
    reason = reply.get("reason") if reply.get("type") == "handshake_error" else None
    code = REGISTRY.get(reason) if isinstance(reason, str) else None
    log.info("media.handshake_refused", reason=reason, **log_fields)
    raise ParleyError(
        code or Codes.WEBRTC_ANSWER_FAILED, params=None if code else {"detail": "bad handshake"}
    )
