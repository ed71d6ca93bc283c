"""What both edge protocols share: the gateway's context and opening a new session on the bus.

`/realtime` (Kivox) and `/chat/ws` differ only in their frames; a session is started the same way
(remembered for resumption, output subscribed before `sessions.start` is published), and both go
through the same admission gate: at most `gateway_handshake_concurrency` handshakes are being
admitted at once, the others wait for a slot (a burst queues) and, after
`gateway_handshake_queue_s`, are refused with `realtime.server_busy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict, Unpack
from uuid import UUID

from faststream.nats import NatsBroker
from redis.asyncio import Redis

from parley_common.auth_client import AuthClient
from parley_common.bus import bus_events
from parley_common.errors import Codes
from parley_common.redis_client import RedisLine
from parley_common.session_contract import SessionStart
from parley_common.voice_formats import VoiceFormats
from parley_session_gateway.access import Admission, Refused
from parley_session_gateway.agent_access import AgentAccess
from parley_session_gateway.bridge import OnControl, OnOutput, SessionBridge
from parley_session_gateway.live import LiveConnections
from parley_session_gateway.resume import remember
from parley_session_gateway.settings import GatewaySettings
from parley_session_gateway.ticks import Ticker


@dataclass
class GatewayContext:
    settings: GatewaySettings
    broker: NatsBroker
    auth: AuthClient
    redis: Redis
    live: LiveConnections  # open connections by credential, closed when it is revoked
    access: AgentAccess  # `catalog.agent.access`, live agents' answers reused (agent_access.py)
    line: RedisLine  # the resume records' own connection (resume.py)
    ticks: Ticker | None = field(
        default=None, repr=False
    )  # realtime ticks' timer (ticks.py), made at first use
    _gate: asyncio.Semaphore | None = field(default=None, repr=False)

    def bridge(self, conversation_id: UUID, last_index: int = 0) -> SessionBridge:
        """The bus side of a connection to this conversation."""
        return SessionBridge(
            self.broker.connection,
            bus_events(self.broker),
            conversation_id,
            last_index,
            publish_timeout_s=self.settings.bus_publish_timeout_s,
        )

    @contextlib.asynccontextmanager
    async def admitting(self) -> AsyncIterator[None]:
        """Hold one of the admission slots while a handshake is being admitted."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.settings.gateway_handshake_concurrency)
        gate = self._gate
        if not gate.locked():
            await gate.acquire()  # a free slot: taken at once (no timer, no task)
        else:
            try:
                async with asyncio.timeout(self.settings.gateway_handshake_queue_s):
                    await gate.acquire()
            except TimeoutError:
                raise Refused(Codes.REALTIME_SERVER_BUSY) from None
        try:
            yield
        finally:
            gate.release()


class StartOptions(TypedDict, total=False):
    """What a protocol's handshake may say about its new session (all optional)."""

    channel: str | None
    render_directive: str | None
    voice: VoiceFormats | None  # a voice session's audio formats
    conversation_id: UUID | None  # chosen ahead (a voice link subscribes before the start)


async def open_session(
    ctx: GatewayContext,
    admission: Admission,
    *,
    connection_id: str,
    on_output: OnOutput,
    on_control: OnControl,
    **options: Unpack[StartOptions],
) -> SessionBridge:
    """A new conversation with the admitted agent, attached before the runtime can answer."""
    conversation_id = options.get("conversation_id") or uuid.uuid4()
    await remember(ctx.line, conversation_id, admission, ctx.settings.gateway_resume_ttl_s)
    bridge = ctx.bridge(conversation_id)
    start = SessionStart(
        conversation_id=conversation_id,
        agent_id=admission.agent_id,
        principal=admission.principal,
        channel=options.get("channel"),
        render_directive=options.get("render_directive"),
        voice=options.get("voice"),
        started_at=datetime.now(UTC),
        connection_id=connection_id,
        # A client token's `data` (from whoever minted it) becomes the session's variables.
        variables=dict(admission.principal.data or {}),
    )
    try:
        await bridge.attach(on_output, on_control, new=True)
        await bridge.start(start)
    except BaseException:
        await bridge.detach()  # nothing started: no consumer left behind
        raise
    return bridge
