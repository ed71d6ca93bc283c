"""`current_span` makes the span `tracer.start_as_current_span` makes: each case below runs both
ways and the exported spans must match (name, parent, attributes, links, events, status)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link

from parley_common.telemetry import current_span

Open = Callable[..., AbstractContextManager[trace.Span]]


def _ways(tracer: trace.Tracer) -> dict[str, Open]:
    return {
        "sdk": lambda name, **kw: tracer.start_as_current_span(name, **kw),
        "ours": lambda name, **kw: current_span(tracer, name, **kw),
    }


def _shape(span: ReadableSpan, by_id: dict[int, str]) -> dict[str, Any]:
    return {
        "name": span.name,
        "parent": by_id.get(span.parent.span_id) if span.parent is not None else None,
        "remote_parent": span.parent.is_remote if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "links": len(span.links),
        "events": [(e.name, (e.attributes or {}).get("exception.type")) for e in span.events],
        "status": (span.status.status_code, span.status.description),
    }


def _run(case: Callable[[Open], None]) -> dict[str, list[dict[str, Any]]]:
    shapes = {}
    for way in ("sdk", "ours"):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        case(_ways(provider.get_tracer("t"))[way])
        spans = exporter.get_finished_spans()
        by_id = {s.context.span_id: s.name for s in spans}
        shapes[way] = [_shape(s, by_id) for s in spans]
    return shapes


def _nested(open_: Open) -> None:
    before = otel_context.get_current()
    with open_("outer", attributes={"conversation.id": "c1"}) as outer:
        assert trace.get_current_span() is outer
        with open_("inner", attributes={"node.id": "n1", "node.type": "dialog"}) as inner:
            assert trace.get_current_span() is inner
            inner.add_event("first_token")
        assert trace.get_current_span() is outer
    assert otel_context.get_current() == before


def _failing(open_: Open) -> None:
    with pytest.raises(ValueError, match="bad flow"), open_("turn"):
        raise ValueError("bad flow")


def _cancelled(open_: Open) -> None:
    with pytest.raises(asyncio.CancelledError), open_("turn"):
        raise asyncio.CancelledError


def _remote_parent_and_links(open_: Open) -> None:
    carrier: dict[str, str] = {}
    with open_("sender"):
        inject(carrier)
        link = Link(trace.get_current_span().get_span_context())
    with open_("receiver", context=extract(carrier), links=[link]):
        pass


@pytest.mark.parametrize("case", [_nested, _failing, _cancelled, _remote_parent_and_links])
def test_current_span_makes_the_sdks_span(case: Callable[[Open], None]) -> None:
    shapes = _run(case)
    assert shapes["ours"] == shapes["sdk"]
    assert shapes["ours"]  # the case made spans


def test_an_exception_is_recorded_and_a_cancellation_is_not() -> None:
    failed = _run(_failing)["ours"][0]
    assert failed["events"] == [("exception", "ValueError")]
    assert failed["status"] == (trace.StatusCode.ERROR, "ValueError: bad flow")
    cancelled = _run(_cancelled)["ours"][0]
    assert cancelled["events"] == [] and cancelled["status"] == (trace.StatusCode.UNSET, None)


def test_no_app_source_opens_a_current_span_the_sdks_way(app_sources: list[tuple[str, ast.Module]]) -> None:
    """One way to open a current span in our code (`current_span`), so none pays for the other."""
    found = [
        f"{path}:{node.lineno}"
        for path, tree in app_sources
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "start_as_current_span"
    ]
    assert found == []
