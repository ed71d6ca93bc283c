"""Every bus subscription of a speech worker, declared here next to its handler.

Both subjects are request/reply in the queue group `speech`: each request reaches one worker.
The audio of a voice session, and the cancels of a stream, reach the worker holding them on
subjects it subscribes to itself (recognition.py, synthesis.py). The health ping, with the
worker id and its session count, is the service kit's (parley_common.kit.service).
"""

from __future__ import annotations

from faststream.nats import NatsBroker

from parley_common import subjects
from parley_common.bus import bus_handler
from parley_common.speech_contract import (
    SpeechSessionOpen,
    SpeechSessionOpened,
    TtsAccepted,
    TtsSynthesizeRequest,
)
from parley_speech.service import SpeechService


def register(broker: NatsBroker, service: SpeechService) -> None:
    @broker.subscriber(subjects.SPEECH_SESSION_OPEN, queue=subjects.QUEUE_SPEECH)
    @bus_handler(SpeechSessionOpen)
    async def open_session(request: SpeechSessionOpen) -> SpeechSessionOpened:
        return await service.open_session(request)

    @broker.subscriber(subjects.SPEECH_TTS_SYNTHESIZE, queue=subjects.QUEUE_SPEECH)
    @bus_handler(TtsSynthesizeRequest)
    async def synthesize(request: TtsSynthesizeRequest) -> TtsAccepted:
        return await service.synthesize(request)
