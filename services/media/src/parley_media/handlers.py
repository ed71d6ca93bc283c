"""Every bus subscription of a media worker, declared here next to its handler.

`media.webrtc.offer` is request/reply in the queue group `media`: each offer reaches one worker,
which then holds the call until it ends.
"""

from __future__ import annotations

from faststream.nats import NatsBroker

from parley_common import subjects
from parley_common.bus import bus_handler
from parley_common.media_contract import MediaOfferReply, MediaOfferRequest
from parley_media.service import MediaService


def register(broker: NatsBroker, service: MediaService) -> None:
    @broker.subscriber(subjects.MEDIA_WEBRTC_OFFER, queue=subjects.QUEUE_MEDIA)
    @bus_handler(MediaOfferRequest)
    async def offer(request: MediaOfferRequest) -> MediaOfferReply:
        return await service.answer(request)
