"""Everything the gateway hears on the bus, and every question it asks there, in one place.

Subscriptions (the gateway handles these), each opened by the function named here:

- `auth.events.revoked`: core, fan-out (no queue group), subscribed by `AuthClient` on the app's
  broker; `listen_revocations` hands it to `live.LiveConnections.on_revoked`.
- `catalog.events.agent.*`: core, fan-out, subscribed by `agent_access.AgentAccess` on the app's
  broker: an agent changed, so the catalog's answers about it kept there are dropped.
- `session.<id>.ctl`: core, per connection (`session_control`), handled by
  `connection.SessionConnection._on_control` through `bridge.SessionBridge`.
- `session.<id>.out` (stored by stream `SESSION_OUT`): core, per connection (`session_output`, a
  `NumberedReader`), handled by `connection.SessionConnection._on_output`; the stream is read
  with a temporary ordered consumer only to catch up (a resume, a reconnect, a gap in the indices).
- `session.<id>.audio.out`: core with a bounded buffer, per voice socket (`agent_audio`),
  handled by `realtime.voice.VoiceLink`.
- an inbox per Octavus trigger: core, read with `next_msg` (`octavus_stream`), relayed as SSE by
  `octavus.router`.
- `session.<id>.speech`: core, per recognition, subscribed by `parley_common.speech_client.
  RecognitionClient` for `realtime.voice.VoiceLink`.

Requests (core request/reply, the gateway asks): `catalog.agent.access` (`agent_access`, through
`agent_access.AgentAccess`),
`media.webrtc.offer` (`media_offer`), the Octavus session subjects (`octavus`), and auth's
`auth.verify` / `auth.token.mint` through `AuthClient`; a recognition's `speech.session.open`
through `RecognitionClient`. Publications: `sessions.start` and
`session.<id>.in`, durably, in `bridge.SessionBridge`.

Every subscription is nats-py's own (`broker.connection`): they are opened and closed per socket,
which FastStream's declared subscribers are not made for. The two every session holds (`ctl` and
`out`) are `parley_common.held_subscription`s: no queue or task while the session is quiet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import Principal
from parley_common.bus import BusEvents, request
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest
from parley_common.held_subscription import subscribe_held
from parley_common.media_contract import MediaOfferReply, MediaOfferRequest
from parley_common.numbered import NumberedReader
from parley_common.octavus import sessions as octavus_wire
from parley_common.session_contract import SessionControl, SessionOutput
from parley_session_gateway.live import LiveConnections

OnMsg = Callable[[Msg], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)

log = structlog.get_logger(__name__)


def decoder(model: type[M], *, invalid: str, **context: str) -> Callable[[bytes], M | None]:
    """Validate a body as `model`; an invalid one is logged as `invalid` and gives None."""

    def decode(data: bytes) -> M | None:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            log.error(invalid, error=str(exc), **context)
            return None

    return decode


def parsed(model: type[M], handle: Callable[[M], Awaitable[None]], *, invalid: str, **context: str) -> OnMsg:
    """A message handler that validates the body as `model` first; an invalid body is logged as
    `invalid` and dropped (the subscription lives on)."""
    decode = decoder(model, invalid=invalid, **context)

    async def on_msg(msg: Msg) -> None:
        item = decode(msg.data)
        if item is not None:
            await handle(item)

    return on_msg


# ----------------------------------------------------------------------------- subscriptions


def listen_revocations(auth: AuthClient, live: LiveConnections) -> None:
    """`auth.events.revoked` (subscribed by `AuthClient` on the app's broker) ends live connections."""
    auth.on_revoked(live.on_revoked)


async def session_control(
    nc: Client, conversation_id: str, handle: Callable[[SessionControl], Awaitable[None]]
) -> Subscription:
    """Which connection the runtime serves, and the session's timing."""
    on_msg = parsed(SessionControl, handle, invalid="realtime.bad_control", conversation_id=conversation_id)
    return await subscribe_held(nc, subjects.session_ctl(conversation_id), on_msg)


def session_output(
    nc: Client,
    events: BusEvents,
    conversation_id: str,
    handle: Callable[[SessionOutput], Awaitable[None]],
    *,
    after: int,
) -> NumberedReader[SessionOutput]:
    """The session's events after index `after`, each once, in order, across broker restarts
    (call `open()`)."""
    return NumberedReader(
        nc,
        events,
        stream=subjects.SESSION_OUT_STREAM,
        subject=subjects.session_out(conversation_id),
        decode=decoder(SessionOutput, invalid="realtime.bad_output", conversation_id=conversation_id),
        index_of=lambda out: out.index,
        deliver=handle,
        after=after,
    )


async def agent_audio(
    nc: Client, conversation_id: str, on_msg: OnMsg, *, max_msgs: int, max_bytes: int
) -> Subscription:
    """The agent's audio, paced by the speech worker; a slow socket drops, never blocks the bus."""
    return await nc.subscribe(
        subjects.session_audio_out(conversation_id),
        cb=on_msg,
        pending_msgs_limit=max_msgs,
        pending_bytes_limit=max_bytes,
    )


async def octavus_stream(nc: Client) -> tuple[str, Subscription]:
    """A fresh inbox a worker streams a trigger's frames to, read with `next_msg`."""
    inbox = nc.new_inbox()
    return inbox, await nc.subscribe(inbox)


# ----------------------------------------------------------------------------- requests


async def agent_access(
    broker: NatsBroker, agent_id: str, principal: Principal, *, timeout_s: float
) -> AgentAccessReply:
    """`catalog.agent.access`: whether this principal may talk to the agent, and its details."""
    return await request(
        broker,
        subjects.CATALOG_AGENT_ACCESS,
        AgentAccessRequest(agent_id=agent_id, principal=principal),
        AgentAccessReply,
        timeout=timeout_s,
    )


async def media_offer(broker: NatsBroker, offer: MediaOfferRequest, *, timeout_s: float) -> MediaOfferReply:
    """`media.webrtc.offer`: any media worker answers (queue group)."""
    return await request(broker, subjects.MEDIA_WEBRTC_OFFER, offer, MediaOfferReply, timeout=timeout_s)


async def octavus(
    broker: NatsBroker, subject: str, payload: BaseModel, *, timeout_s: float
) -> octavus_wire.OctavusReply:
    """One of the `octavus.session.*` subjects a runtime worker answers."""
    return await request(broker, subject, payload, octavus_wire.OctavusReply, timeout=timeout_s)
