"""Every bus subscription of a speech worker, in one place: read this first.

| subject | kind | handled by |
| --- | --- | --- |
| `speech.session.open` | request/reply, queue group `speech` | `SpeechService.open_session` |
| `speech.tts.synthesize` | request/reply, queue group `speech` | `SpeechService.synthesize` |
| `catalog.events.agent.*` | event, every worker | `AgentSecrets.forget` (cached agent secrets) |
| `speech.audio.<worker>.<key>` | core NATS, one per voice session | `RecognitionSession.on_message` |
| `speech.tts.cancel.<stream>` | core NATS, one per synthesis job | `TtsJob.on_cancel` |
| `health.ping.speech` | request/reply | the service kit (parley_common.kit.service) |

The first three are FastStream subscribers made once at start. A voice session's audio and a
stream's cancels are hot paths opened and closed per session or job: they go straight to nats-py
(`subscribe_audio`, `subscribe_cancel`), subscribed on the worker that holds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from parley_common import subjects
from parley_common.bus import bus_handler
from parley_common.speech_contract import (
    SpeechSessionOpen,
    SpeechSessionOpened,
    TtsAccepted,
    TtsSynthesizeRequest,
)

if TYPE_CHECKING:  # the sessions and jobs subscribe through this module: no import cycle
    from parley_speech.agents import AgentSecrets
    from parley_speech.service import SpeechService

MsgHandler = Callable[[Msg], Awaitable[None]]

# A voice session's audio may arrive in a burst (a replay after a re-open): room for it.
AUDIO_PENDING_MSGS = 20_000
AUDIO_PENDING_BYTES = 16 * 1024 * 1024


def register(broker: NatsBroker, service: SpeechService, agents: AgentSecrets) -> None:
    @broker.subscriber(subjects.SPEECH_SESSION_OPEN, queue=subjects.QUEUE_SPEECH)
    @bus_handler(SpeechSessionOpen)
    async def open_session(request: SpeechSessionOpen) -> SpeechSessionOpened:
        return await service.open_session(request)

    @broker.subscriber(subjects.SPEECH_TTS_SYNTHESIZE, queue=subjects.QUEUE_SPEECH)
    @bus_handler(TtsSynthesizeRequest)
    async def synthesize(request: TtsSynthesizeRequest) -> TtsAccepted:
        return await service.synthesize(request)

    @broker.subscriber(f"{subjects.CATALOG_AGENT_EVENTS}.*")
    async def agent_changed(body: Any) -> None:
        agents.forget(body)


async def subscribe_audio(nc: NatsClient, subject: str, cb: MsgHandler) -> Subscription:
    """One voice session's audio and control messages (recognition.py)."""
    return await nc.subscribe(
        subject, cb=cb, pending_msgs_limit=AUDIO_PENDING_MSGS, pending_bytes_limit=AUDIO_PENDING_BYTES
    )


async def subscribe_cancel(nc: NatsClient, stream_id: str, cb: MsgHandler) -> Subscription:
    """The cancels of one synthesis stream (synthesis.py)."""
    return await nc.subscribe(subjects.speech_tts_cancel(stream_id), cb=cb)
