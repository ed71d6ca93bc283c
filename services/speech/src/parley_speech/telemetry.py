"""Trace context on what the worker publishes with the raw NATS client (audio, events), so a
trace follows a voice turn across the edge, the speech worker and the runtime."""

from __future__ import annotations

from opentelemetry import propagate


def trace_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    headers: dict[str, str] = dict(extra or {})
    propagate.inject(headers)
    return headers
