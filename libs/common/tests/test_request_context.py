"""Every request a served process answers starts from an empty context (`kit.runner.server_config`).

uvicorn starts a request that arrived on a connection before the one ahead of it was answered (a
pipelined request) from inside that one's task, so it began with that request's context: its span
became a child of the request before it, in that request's trace (uvicorn#3158). The trace list
then lacked it: once in CI, the e2e credential test waited in vain for `POST /auth/sessions`.
"""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from parley_common.kit.runner import QuietServer, server_config
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_devstack.servers import free_port
from parley_devstack.testing import probe_app

REQUEST = b"GET /probe HTTP/1.1\r\nhost: probe\r\n\r\n"


async def pipelined_spans(reset: bool | None) -> list[ReadableSpan]:
    """The server spans of two requests sent in one write on one connection, to the app served as
    `serve` serves it (with uvicorn's default instead when `reset` is given)."""
    exporter = InMemorySpanExporter()
    setup_telemetry(CommonSettings()).add_span_processor(SimpleSpanProcessor(exporter))
    settings = CommonSettings(http_host="127.0.0.1", http_port=free_port())
    config = server_config(probe_app(settings, http_path="/probe", ws_path="/ws", greeting="hi"), settings)
    config.lifespan = "off"  # no bus or database behind the probe
    if reset is not None:
        config.reset_contextvars = reset
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection(settings.http_host, settings.http_port)
            writer.write(REQUEST * 2)
            answered = b""
            while answered.count(b'{"ok":true}') < 2:
                answered += await reader.read(65536)
            writer.close()
            while len(spans := [s for s in exporter.get_finished_spans() if s.name == "GET /probe"]) < 2:
                await asyncio.sleep(0.01)
        return spans
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_pipelined_request_gets_a_trace_of_its_own() -> None:
    first, second = await pipelined_spans(reset=None)
    assert first.kind == second.kind == SpanKind.SERVER
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != second.context.trace_id


async def test_without_the_reset_it_joined_the_trace_of_the_request_before_it() -> None:
    # What the test above guards against, shown on uvicorn's default: the check can fail.
    first, second = await pipelined_spans(reset=False)
    assert second.kind == SpanKind.INTERNAL
    assert second.parent is not None and second.parent.span_id == first.context.span_id
