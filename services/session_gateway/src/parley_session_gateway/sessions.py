"""What both edge protocols share: the gateway's context and opening a new session on the bus.

`/realtime` (Kivox) and `/chat/ws` differ only in their frames; a session is started the same way
(remembered for resumption, output subscribed before `sessions.start` is published).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream.nats import NatsBroker
from redis.asyncio import Redis

from parley_common.auth_client import AuthClient
from parley_common.session_contract import SessionStart
from parley_session_gateway.live import LiveConnections
from parley_session_gateway.realtime.access import Admission, remember
from parley_session_gateway.realtime.bridge import OnControl, OnOutput, SessionBridge
from parley_session_gateway.settings import GatewaySettings


@dataclass
class GatewayContext:
    settings: GatewaySettings
    broker: NatsBroker
    auth: AuthClient
    redis: Redis
    live: LiveConnections  # open connections by credential, closed when it is revoked


async def open_session(
    ctx: GatewayContext,
    admission: Admission,
    *,
    connection_id: str,
    on_output: OnOutput,
    on_control: OnControl,
    channel: str | None = None,
    render_directive: str | None = None,
) -> SessionBridge:
    """A new conversation with the admitted agent, attached before the runtime can answer."""
    conversation_id = uuid.uuid4()
    await remember(ctx.redis, conversation_id, admission, ctx.settings.gateway_resume_ttl_s)
    nc = ctx.broker.connection
    bridge = SessionBridge(nc, nc.jetstream(), conversation_id)
    await bridge.attach(on_output, on_control)
    await bridge.start(
        SessionStart(
            conversation_id=conversation_id,
            agent_id=admission.agent_id,
            principal=admission.principal,
            channel=channel,
            render_directive=render_directive,
            started_at=datetime.now(UTC),
            connection_id=connection_id,
            # A client token's `data` (from whoever minted it) becomes the session's variables.
            variables=dict(admission.principal.data or {}),
        )
    )
    return bridge
