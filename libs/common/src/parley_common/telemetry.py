"""OpenTelemetry setup: one tracer provider per process, OTLP export when configured."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from parley_common.settings import CommonSettings

_configured = False


def setup_telemetry(settings: CommonSettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the global tracer provider (idempotent). Spans are created even without an exporter
    so trace context is propagated and logged; they are exported only with an OTLP endpoint."""
    global _configured
    current = trace.get_tracer_provider()
    if _configured and isinstance(current, TracerProvider):
        if exporter is not None:
            current.add_span_processor(BatchSpanProcessor(exporter))
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": f"parley-{settings.service_name}"}))
    if exporter is None and settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint.rstrip('/')}/v1/traces")
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider
