"""Every Prometheus metric Parley exposes, defined once (docs/operations.md lists them).

Each service serves the default registry at `GET /metrics` (see `create_app`). Labels stay
low-cardinality on purpose: no agent, user or conversation ids.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _latency(name: str, documentation: str, labels: Sequence[str] = ()) -> Histogram:
    """Every duration Parley measures is a histogram on the same buckets."""
    return Histogram(name, documentation, labels, buckets=_LATENCY_BUCKETS)


# HTTP (every service, recorded by the app factory's middleware)
HTTP_REQUESTS = Counter(
    "parley_http_requests_total", "HTTP requests handled.", ["service", "method", "route", "status"]
)
HTTP_DURATION = _latency(
    "parley_http_request_duration_seconds", "HTTP request handling time.", ["service", "method", "route"]
)
# Bus request/reply as seen by the caller
BUS_REQUEST_SECONDS = _latency("parley_bus_request_seconds", "Bus request/reply round trip.", ["subject"])
# Auth
RATE_LIMIT_REJECTIONS = Counter(
    "parley_rate_limit_rejections_total", "Requests refused by a rate limit.", ["action"]
)
# Gateway
WS_CONNECTIONS_ACTIVE = Gauge(
    "parley_ws_connections_active", "Open client WebSocket/SSE connections.", ["protocol"]
)
# Runtime
SESSIONS_ACTIVE = Gauge("parley_sessions_active", "Sessions owned by this runtime worker.")
WORKER_CAPACITY_IN_USE = Gauge(
    "parley_worker_capacity_in_use", "Share of this worker's session slots in use (0..1)."
)
TURNS = Counter("parley_turns_total", "Completed user turns.", ["outcome"])
TURN_LATENCY = _latency("parley_turn_latency_seconds", "User input to turn_complete.")
LLM_TIME_TO_FIRST_TOKEN = _latency(
    "parley_llm_time_to_first_token_seconds", "LLM request to first streamed token.", ["provider"]
)
LLM_ERRORS = Counter("parley_llm_errors_total", "LLM calls that failed.", ["provider", "code"])
JETSTREAM_CONSUMER_PENDING = Gauge(
    "parley_jetstream_consumer_pending", "Messages waiting for a JetStream consumer.", ["stream", "consumer"]
)
# Speech workers
SPEECH_SESSIONS_ACTIVE = Gauge("parley_speech_sessions_active", "Voice sessions this speech worker holds.")
SPEECH_STT_SECONDS = _latency(
    "parley_speech_stt_seconds", "End of a user turn to its final transcript.", ["engine"]
)
SPEECH_TTS_FIRST_CHUNK_SECONDS = _latency(
    "parley_speech_tts_first_chunk_seconds",
    "Synthesis request to its first published audio chunk.",
    ["engine"],
)
SPEECH_ERRORS = Counter("parley_speech_errors_total", "Speech engine failures.", ["engine", "code"])
# WebRTC media workers (docs/webrtc.md).
MEDIA_CALLS_ACTIVE = Gauge("parley_media_calls_active", "WebRTC calls this media worker holds.")
MEDIA_ANSWER_SECONDS = _latency(
    "parley_media_answer_seconds", "An offer taken to its SDP answer (the /realtime handshake included)."
)
MEDIA_CALLS_ENDED = Counter("parley_media_calls_ended_total", "WebRTC calls ended, by why.", ["reason"])
# The garbage collector (every served process; `observe_gc`): what `PARLEY_GC_THRESHOLDS` tunes.
GC_SECONDS = Counter(
    "parley_gc_seconds_total", "Time spent in the cyclic garbage collector, by generation.", ["generation"]
)
_GC_BY_GENERATION = [GC_SECONDS.labels(generation=str(g)) for g in range(3)]
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:  # the collector holds the GIL throughout: wall time is its CPU time
        _GC_BY_GENERATION[info["generation"]].inc(time.perf_counter() - _gc_started)


def observe_gc() -> None:
    """Count the collector's time in `parley_gc_seconds_total` (once per process)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
