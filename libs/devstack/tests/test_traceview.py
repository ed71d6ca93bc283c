"""The local trace viewer: real spans from the OpenTelemetry SDK, exported over OTLP/HTTP by the
same exporter the services use, to the receiver served by uvicorn on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from parley_devstack.servers import free_port
from parley_devstack.traceview import SpanRecord, TraceStore, TraceViewSettings, build_app


@pytest.fixture(scope="module")
def viewer() -> Iterator[str]:
    port = free_port()
    app = build_app(TraceViewSettings(traceview_max_traces=50, traceview_max_spans=1000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the viewer did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def provider(url: str, service: str, **exporter: Any) -> TracerProvider:
    """A tracer provider of one fake service, exporting synchronously (no batching to wait for)."""
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", **exporter)))
    return tp


def test_spans_of_two_services_make_one_tree(viewer: str) -> None:
    gateway = provider(viewer, "parley-session_gateway").get_tracer("test")
    runtime = provider(viewer, "parley-runtime", compression=Compression.Gzip).get_tracer("test")
    with gateway.start_as_current_span("realtime.input", attributes={"input.type": "input_text"}) as root:
        time.sleep(0.01)  # so the child starts visibly after its parent
        # The runtime continues the gateway's trace (what the W3C headers on the bus do).
        with (
            runtime.start_as_current_span("runtime.turn", attributes={"input.seq": 2}),
            runtime.start_as_current_span("runtime.node", attributes={"node.id": "chat"}) as node,
        ):
            with runtime.start_as_current_span("llm.stream") as llm:
                llm.add_event("first_token", {"gen_ai.system": "builtin"})
            node.set_status(Status(StatusCode.ERROR, "webhook failed"))
    trace_id = format(root.get_span_context().trace_id, "032x")

    tree = httpx.get(f"{viewer}/traces/{trace_id}.json").json()
    assert tree["trace_id"] == trace_id and tree["span_count"] == 4
    (top,) = tree["roots"]
    assert (top["name"], top["service"], top["kind"]) == (
        "realtime.input",
        "parley-session_gateway",
        "internal",
    )
    assert top["attributes"] == {"input.type": "input_text"}
    (turn,) = top["children"]
    assert (turn["name"], turn["service"], turn["attributes"]) == (
        "runtime.turn",
        "parley-runtime",
        {"input.seq": 2},
    )
    assert turn["parent_span_id"] == top["span_id"]
    assert turn["start_unix_nano"] >= top["start_unix_nano"] + 10_000_000
    (node_span,) = turn["children"]
    assert node_span["status"] == "error" and node_span["status_message"] == "webhook failed"
    (llm_span,) = node_span["children"]
    assert llm_span["children"] == []
    (event,) = llm_span["events"]
    assert event["name"] == "first_token" and event["attributes"] == {"gen_ai.system": "builtin"}
    assert top["duration_ms"] >= turn["duration_ms"] >= llm_span["duration_ms"] >= 0

    listing = httpx.get(f"{viewer}/traces")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    row = listing.text.split(f'href="/traces/{trace_id}"')[1].split("</tr>")[0]
    assert ">realtime.input</a>" in row and "1 error" in row
    assert "parley-session_gateway" in row and '<td class="num">4</td>' in row

    (summary,) = [t for t in httpx.get(f"{viewer}/traces.json").json() if t["trace_id"] == trace_id]
    assert (summary["root"], summary["service"]) == ("realtime.input", "parley-session_gateway")
    assert (summary["span_count"], summary["errors"]) == (4, 1)
    assert summary["duration_ms"] == top["duration_ms"]

    page = httpx.get(f"{viewer}/traces/{trace_id}")
    assert page.status_code == 200
    names = ["realtime.input", "runtime.turn", "runtime.node", "llm.stream"]
    positions = [page.text.index(f">{n}</span>") for n in names]
    assert positions == sorted(positions)  # depth-first, parents before children
    assert "first_token" in page.text and "webhook failed" in page.text and "node.id" in page.text


def test_otlp_json_is_accepted(viewer: str) -> None:
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    export = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "curl"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "by hand",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    resp = httpx.post(
        f"{viewer}/v1/traces", content=json.dumps(export), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200 and resp.json() == {}
    (span,) = httpx.get(f"{viewer}/traces/{trace_id}.json").json()["roots"]
    assert (span["span_id"], span["service"], span["kind"]) == (span_id, "curl", "server")
    assert span["attributes"] == {"n": 7} and span["duration_ms"] == 1000.0


def test_bad_requests(viewer: str) -> None:
    garbage = httpx.post(
        f"{viewer}/v1/traces", content=b"\xff\x00nope", headers={"content-type": "application/x-protobuf"}
    )
    assert garbage.status_code == 422 and garbage.json()["code"] == "request.validation_failed"
    assert (
        httpx.post(f"{viewer}/v1/traces", content=b"x", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    unknown = "0" * 31 + "1"
    missing = httpx.get(f"{viewer}/traces/{unknown}.json")
    assert missing.status_code == 404 and missing.json()["code"] == "resource.not_found"
    assert httpx.get(f"{viewer}/traces/{unknown}").status_code == 404
    assert httpx.get(f"{viewer}/traces/not-an-id").status_code == 404


def span(trace_id: str, n: int) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id,
        span_id=f"{n:016x}",
        parent_span_id=None,
        name=f"s{n}",
        service="t",
        kind="internal",
        start_unix_nano=n,
        end_unix_nano=n + 1,
        status="unset",
    )


def test_the_store_keeps_the_most_recently_updated_traces_within_bounds() -> None:
    store = TraceStore(max_traces=3, max_spans=10)
    for t in "abcd":
        store.add([span(t * 32, 1)])
    assert store.get("a" * 32) is None and len(store) == 3  # the oldest went first
    store.add([span("b" * 32, 2)])  # b is now the most recently updated
    store.add([span("e" * 32, 3)])
    assert store.get("c" * 32) is None and store.get("b" * 32) is not None
    # Over the span budget: whole traces are evicted, least recently updated first.
    store.add([span("f" * 32, n) for n in range(8)])
    assert store.span_count <= 10 and store.get("f" * 32) is not None and store.get("d" * 32) is None
    # One trace larger than the whole budget keeps its first spans.
    store.add([span("9" * 32, n) for n in range(15)])
    assert len(store) == 1 and store.span_count == 10 and store.dropped_spans == 5
    assert [s.name for s in store.get("9" * 32) or []] == [f"s{n}" for n in range(10)]


def test_traces_of_one_conversation(viewer: str) -> None:
    """`?conversation_id=` keeps the traces with a span of that conversation (the playground's link)."""
    conversation = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
    tp = provider(viewer, "parley-runtime")
    tracer = tp.get_tracer("t")
    with (
        tracer.start_as_current_span("realtime.input"),
        tracer.start_as_current_span("runtime.turn", attributes={"conversation.id": conversation}),
    ):
        pass
    with tracer.start_as_current_span("runtime.turn", attributes={"conversation.id": "another"}):
        pass
    with tracer.start_as_current_span("GET /users/me"):
        pass
    tp.shutdown()
    mine = httpx.get(f"{viewer}/traces.json", params={"conversation_id": conversation}).json()
    assert [t["root"] for t in mine] == ["realtime.input"]
    assert len(httpx.get(f"{viewer}/traces.json").json()) >= 3
    page = httpx.get(f"{viewer}/traces", params={"conversation_id": conversation})
    assert page.status_code == 200 and mine[0]["trace_id"] in page.text and "GET /users/me" not in page.text
    assert httpx.get(f"{viewer}/traces.json", params={"conversation_id": "<script>"}).status_code == 422
