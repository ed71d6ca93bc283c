"""A media worker's calls: taking offers within its capacity, and ending them on shutdown."""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import structlog
from opentelemetry import trace

from parley_common import metrics
from parley_common.errors import Codes, ParleyError
from parley_common.media_contract import MediaOfferReply, MediaOfferRequest
from parley_common.telemetry import current_span
from parley_media.call import Call
from parley_media.settings import MediaSettings

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.media")


def new_worker_id() -> str:
    return f"m{os.getpid()}-{secrets.token_hex(4)}"


class MediaService:
    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.worker_id = new_worker_id()
        self.calls: dict[str, Call] = {}
        self.starting = 0
        self.stopping = False

    async def answer(self, request: MediaOfferRequest) -> MediaOfferReply:
        if self.stopping or len(self.calls) + self.starting >= self.settings.media_max_peers:
            raise ParleyError(Codes.WEBRTC_MEDIA_UNAVAILABLE)
        call = Call(self.settings, request, worker_id=self.worker_id, on_done=self._forget)
        self.starting += 1
        started = time.perf_counter()
        try:
            with current_span(tracer, "media.answer", attributes={"agent.id": request.agent_id}):
                sdp = await call.start()
        except ParleyError:
            raise
        except Exception as exc:
            log.exception("media.answer_failed", **call.log_fields())
            raise ParleyError(Codes.WEBRTC_ANSWER_FAILED, params={"detail": type(exc).__name__}) from exc
        finally:
            self.starting -= 1
        metrics.MEDIA_ANSWER_SECONDS.observe(time.perf_counter() - started)
        if not call.finished.is_set():
            self.calls[call.id] = call
            metrics.MEDIA_CALLS_ACTIVE.set(len(self.calls))
        return MediaOfferReply(
            ok=True,
            sdp=sdp,
            worker_id=self.worker_id,
            peer_id=call.id,
            conversation_id=call.conversation_id,
        )

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        metrics.MEDIA_CALLS_ACTIVE.set(len(self.calls))
        metrics.MEDIA_CALLS_ENDED.labels(call.end_reason or "internal").inc()

    async def stop(self) -> None:
        """Every call is told (`error` `webrtc.media_lost`) and ended, its conversation with it."""
        self.stopping = True
        calls = list(self.calls.values())
        await asyncio.gather(*(call.finish("shutdown") for call in calls), return_exceptions=True)
