"""OpenTelemetry setup: one tracer provider per process, OTLP export when configured.

No credential leaves a process in a span: the HTTP/ASGI instrumentation's URL attributes are
redacted as each server span starts (`redact_span_urls`, the hook `create_app` installs), and every
exporter this module installs sees spans through `RedactingSpanExporter` (attributes, event
attributes, names and status texts through `parley_common.redact`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, Status, StatusCode
from opentelemetry.util.types import Attributes

from parley_common.redact import redact_text, redact_url, redact_value
from parley_common.settings import CommonSettings

_configured = False
# Attributes of the HTTP semantic conventions (old and new) that carry the query string.
_URL_ATTRIBUTES = ("http.url", "http.target", "url.full")
_QUERY_ATTRIBUTES = ("url.query",)


def redact_span_urls(span: Span, _scope: dict[str, Any]) -> None:
    """`server_request_hook` of the ASGI instrumentation: `?token=…` never stays on a span."""
    if span is None or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            span.set_attribute(name, redact_url(value))
    for name in _QUERY_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            span.set_attribute(name, redact_url(f"?{value}")[1:])


def _redacted(span: ReadableSpan) -> ReadableSpan:
    attributes = redact_value(dict(span.attributes or {}))
    for name in _URL_ATTRIBUTES:
        if isinstance(attributes.get(name), str):
            attributes[name] = redact_url(attributes[name])
    events = [Event(e.name, redact_value(dict(e.attributes or {})), e.timestamp) for e in span.events]
    status = span.status
    if status.description:
        status = Status(status.status_code, redact_text(status.description))
    return ReadableSpan(
        name=redact_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Exports through `inner` the spans with every credential shape replaced."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def setup_telemetry(settings: CommonSettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider (idempotent). Spans are created even without an exporter
    so trace context is propagated and logged; they are exported only with an OTLP endpoint."""
    global _configured
    current = trace.get_tracer_provider()
    if _configured and isinstance(current, TracerProvider):
        if exporter is not None:
            current.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter)))
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": f"parley-{settings.service_name}"}))
    if exporter is None and settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint.rstrip('/')}/v1/traces")
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter)))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


@contextmanager
def untraced() -> Iterator[None]:
    """Run the block in an empty trace context. For what starts long-lived tasks (nats-py's task per
    subscription, a session's own tasks): a task keeps a copy of the context it was made in for as
    long as it runs, so one made inside a span would keep that span (ended, exported) in memory for
    the life of a connection or a session."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


class current_span:
    """`tracer.start_as_current_span(name, ...)`, as one small object instead of three nested
    generator context managers (a module's `ProxyTracer`'s, the SDK tracer's and `use_span`'s):
    the same span, made current inside the block, ended after it, an `Exception` leaving it
    recorded and its status `ERROR` (a `BaseException` such as a cancellation is not, as
    `use_span` has it). About a sixth less CPU per span (`python -m bench.span_cost`; the SDK's
    span itself is most of the rest; docs/performance.md, change 94)."""

    __slots__ = ("_attributes", "_context", "_links", "_name", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        *,
        context: otel_context.Context | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] = (),
    ) -> None:
        self._tracer, self._name, self._context = tracer, name, context
        self._attributes, self._links = attributes, links

    def __enter__(self) -> Span:
        span = self._tracer.start_span(
            self._name, context=self._context, attributes=self._attributes, links=self._links
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)
        span = self._span
        if isinstance(exc, Exception) and span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
