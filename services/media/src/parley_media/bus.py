"""Every bus subscription of a media worker, in one place: read this first.

| subject | kind | handled by |
| --- | --- | --- |
| `media.webrtc.offer` | request/reply, queue group `media` | `MediaService.answer` |
| `health.ping.media` | request/reply | the service kit (parley_common.kit.service) |

Each offer reaches one worker, which then holds the call until it ends. A call talks to its
conversation over the gateway's WebSocket (call.py), not the bus: nothing else is subscribed.
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
