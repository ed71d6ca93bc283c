"""No credential leaves a process in a span: a WebSocket opened with `?token=…` gets no server span
at all (it would be touched on every frame), an HTTP request's URL is redacted where its span is
made, and every exporter Parley installs redacts what it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect

from parley_common.settings import CommonSettings
from parley_common.telemetry import RedactingSpanExporter, setup_telemetry
from parley_devstack.testing import probe_app, serving

KEY = "sk_live_" + "Zx9Yw8Vu" * 5
RESET = "plain-reset-token-0123456789abcdefghij"


@pytest.fixture
async def served() -> AsyncIterator[int]:
    app = probe_app(CommonSettings(), http_path="/probe", ws_path="/realtime", greeting="hi")
    async with serving(app) as port:
        yield port


async def test_websocket_server_span_has_no_token(served: int) -> None:
    exporter = InMemorySpanExporter()
    provider = setup_telemetry(CommonSettings())
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # sees spans as made, not redacted again
    async with connect(f"ws://127.0.0.1:{served}/realtime?token={KEY}&resume=c1") as ws:
        assert await ws.recv() == "hi"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{served}/probe?token={KEY}&resume=c1")).status_code == 200
    finished = exporter.get_finished_spans()
    assert not [s.name for s in finished if "realtime" in s.name]  # no server span around a socket
    spans = [s for s in finished if "probe" in s.name]
    assert spans, [s.name for s in finished]
    for span in spans:
        text = repr(dict(span.attributes or {})) + span.name
        assert KEY not in text, text
    urls = [str(s.attributes["http.url"]) for s in spans if s.attributes and "http.url" in s.attributes]
    assert urls and all("?token=[redacted]&resume=c1" in url for url in urls)  # the rest stays


def test_exporter_redacts_attributes_events_and_status() -> None:
    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(sink)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("webhook", attributes={"url": f"http://crm/x?apikey={RESET}"}) as span:
        span.add_event("request", {"authorization": f"Bearer {RESET}", "key": KEY})
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"failed for password={RESET}"))
    (exported,) = sink.get_finished_spans()
    text = repr(dict(exported.attributes or {})) + repr([dict(e.attributes or {}) for e in exported.events])
    text += exported.status.description or ""
    assert RESET not in text and KEY not in text, text
    assert exported.context == span.get_span_context()  # the same span, only its texts changed
