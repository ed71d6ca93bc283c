"""A local trace viewer for `parley run --traces`: an OTLP/HTTP receiver with a few HTML pages.

Not a collector: it keeps the most recently updated traces in memory (bounded by trace and span
counts, oldest evicted first) and forgets everything when it stops. Endpoints:

- `POST /v1/traces`: OTLP/HTTP, an `ExportTraceServiceRequest` as protobuf
  (`application/x-protobuf`, what the services' exporter sends) or OTLP/JSON (`application/json`);
  gzip bodies are accepted.
- `GET /traces`: the recent traces (root span, service, start, duration, span count);
  `GET /traces.json`: the same list as JSON (`TraceSummary`, newest first; `?limit=`, 200 by default).
  `?conversation_id=` on both keeps the traces of one conversation (a span with that
  `conversation.id`): its opening and each of its turns, as the playground links them.
- `GET /traces/{trace_id}`: one trace as a tree of spans, with attributes and events.
- `GET /traces/{trace_id}.json`: the same tree as JSON (`TraceTree`).

Run: `python -m parley_devstack.traceview` (`PARLEY_HTTP_PORT`, `PARLEY_TRACEVIEW_MAX_TRACES`,
`PARLEY_TRACEVIEW_MAX_SPANS`).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from jinja2 import Environment, PackageLoader, select_autoescape
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from pydantic import BaseModel, Field, computed_field
from pydantic_settings import SettingsConfigDict

from parley_common.errors import Codes, ParleyError
from parley_common.http import error_response
from parley_common.settings import CommonSettings

PROTOBUF = "application/x-protobuf"
ConversationFilter = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-fA-F-]+$")]
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class TraceViewSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "traceview"
    traceview_max_traces: int = Field(default=500, ge=1)
    traceview_max_spans: int = Field(default=50_000, ge=1)


# ----------------------------------------------------------------------------------- the model


class SpanEvent(BaseModel):
    name: str
    time_unix_nano: int
    attributes: dict[str, Any] = {}


class SpanRecord(BaseModel):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str  # "server", "client", "internal", …
    start_unix_nano: int
    end_unix_nano: int
    status: str  # "unset", "ok", "error"
    status_message: str = ""
    attributes: dict[str, Any] = {}
    events: list[SpanEvent] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_ms(self) -> float:
        return max(0, self.end_unix_nano - self.start_unix_nano) / 1e6


class SpanNode(SpanRecord):
    children: list[SpanNode] = []


class TraceTree(BaseModel):
    """`GET /traces/{trace_id}.json`: the spans as a tree; a span whose parent was never received
    (still buffered in another process, or from a caller outside Parley) is a root."""

    trace_id: str
    span_count: int
    roots: list[SpanNode]


class TraceSummary(BaseModel):
    trace_id: str
    root: str
    service: str
    start_unix_nano: int
    duration_ms: float
    span_count: int
    errors: int


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(items)
    return {kv.key: _value(kv.value) for kv in pairs}


_KINDS = {k: n.removeprefix("SPAN_KIND_").lower() for n, k in PbSpan.SpanKind.items()}
_STATUSES = {k: n.removeprefix("STATUS_CODE_").lower() for n, k in Status.StatusCode.items()}


def spans_of(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    out = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        service=service,
                        kind=_KINDS.get(span.kind, "unspecified"),
                        start_unix_nano=span.start_time_unix_nano,
                        end_unix_nano=span.end_time_unix_nano,
                        status=_STATUSES.get(span.status.code, "unset"),
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        events=[
                            SpanEvent(
                                name=e.name,
                                time_unix_nano=e.time_unix_nano,
                                attributes=_attributes(e.attributes),
                            )
                            for e in span.events
                        ],
                    )
                )
    return out


def parse_otlp_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON differs from protobuf's JSON mapping in one way that matters: trace and span ids
    are hex, not base64. Convert them, then let protobuf parse the rest."""
    doc = json.loads(body)
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if holder.get(key):
                            holder[key] = base64.b64encode(bytes.fromhex(holder[key])).decode()
    export = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(doc), export, ignore_unknown_fields=True)
    return export


# ----------------------------------------------------------------------------------- the store


class TraceStore:
    """The most recently updated traces, at most `max_traces` of them and `max_spans` spans in all.

    A trace moves to the front whenever one of its spans arrives (a long session keeps its trace);
    the least recently updated ones are evicted first. One trace larger than `max_spans` on its own
    keeps its first spans and drops the rest.
    """

    def __init__(self, max_traces: int = 500, max_spans: int = 50_000) -> None:
        self.max_traces, self.max_spans = max_traces, max_spans
        self._traces: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._span_count = 0
        self.dropped_spans = 0

    @property
    def span_count(self) -> int:
        return self._span_count

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, spans: list[SpanRecord]) -> None:
        for span in spans:
            trace = self._traces.setdefault(span.trace_id, [])
            self._traces.move_to_end(span.trace_id)
            if len(trace) >= self.max_spans:
                self.dropped_spans += 1
                continue
            trace.append(span)
            self._span_count += 1
            self._evict(keep=span.trace_id)

    def _evict(self, keep: str) -> None:
        while len(self._traces) > self.max_traces or self._span_count > self.max_spans:
            oldest = next(iter(self._traces))
            if oldest == keep:
                return
            self._span_count -= len(self._traces.pop(oldest))

    def get(self, trace_id: str) -> list[SpanRecord] | None:
        spans = self._traces.get(trace_id)
        return list(spans) if spans is not None else None

    def summaries(self, limit: int = 200, conversation_id: str | None = None) -> list[TraceSummary]:
        out = []
        for trace_id, spans in self._traces.items():
            if conversation_id is not None and not any(
                s.attributes.get("conversation.id") == conversation_id for s in spans
            ):
                continue
            roots = _roots(spans)
            root = min(roots or spans, key=lambda s: s.start_unix_nano)
            start = min(s.start_unix_nano for s in spans)
            end = max(s.end_unix_nano for s in spans)
            out.append(
                TraceSummary(
                    trace_id=trace_id,
                    root=root.name,
                    service=root.service,
                    start_unix_nano=start,
                    duration_ms=max(0, end - start) / 1e6,
                    span_count=len(spans),
                    errors=sum(s.status == "error" for s in spans),
                )
            )
        out.sort(key=lambda t: t.start_unix_nano, reverse=True)
        return out[:limit]


def _roots(spans: list[SpanRecord]) -> list[SpanRecord]:
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id not in ids]


def build_tree(trace_id: str, spans: list[SpanRecord]) -> TraceTree:
    children: dict[str, list[SpanRecord]] = {}
    for span in spans:
        if span.parent_span_id is not None:
            children.setdefault(span.parent_span_id, []).append(span)

    def node(span: SpanRecord, seen: frozenset[str]) -> SpanNode:
        # `seen` guards against a malformed export whose parent links form a cycle.
        kids = sorted(children.get(span.span_id, []), key=lambda s: s.start_unix_nano)
        return SpanNode(
            **span.model_dump(exclude={"duration_ms"}),
            children=[node(k, seen | {span.span_id}) for k in kids if k.span_id not in seen],
        )

    roots = sorted(_roots(spans), key=lambda s: s.start_unix_nano)
    return TraceTree(trace_id=trace_id, span_count=len(spans), roots=[node(r, frozenset()) for r in roots])


# ------------------------------------------------------------------------------------ the pages


def _rows(tree: TraceTree) -> list[dict[str, Any]]:
    """The tree flattened in display order, each row with its depth and its bar (% of the trace)."""
    rows: list[dict[str, Any]] = []

    def walk(nodes: list[SpanNode], depth: int) -> None:
        for n in nodes:
            rows.append({"span": n, "depth": depth})
            walk(n.children, depth + 1)

    walk(tree.roots, 0)
    if not rows:
        return rows
    start = min(r["span"].start_unix_nano for r in rows)
    total = max(1, max(r["span"].end_unix_nano for r in rows) - start)
    for r in rows:
        span: SpanNode = r["span"]
        r["offset"] = 100 * (span.start_unix_nano - start) / total
        r["width"] = max(0.3, 100 * (span.end_unix_nano - span.start_unix_nano) / total)
        r["events"] = [(e, (e.time_unix_nano - span.start_unix_nano) / 1e6) for e in span.events]
    return rows


def _clock(unix_nano: int) -> str:
    return datetime.fromtimestamp(unix_nano / 1e9, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


_templates = Environment(loader=PackageLoader("parley_devstack"), autoescape=select_autoescape(["html"]))
_templates.filters["clock"] = _clock


def _page(status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template("traceview.html").render(**context), status_code=status)


def build_app(settings: TraceViewSettings | None = None) -> FastAPI:
    settings = settings or TraceViewSettings()
    store = TraceStore(settings.traceview_max_traces, settings.traceview_max_spans)
    app = FastAPI(title="Parley traces", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.store = store

    @app.exception_handler(ParleyError)
    async def parley_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ParleyError)
        return error_response(exc)

    @app.post("/v1/traces")
    async def receive(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == PROTOBUF:
                export = ExportTraceServiceRequest.FromString(body)
            elif content_type == "application/json":
                export = parse_otlp_json(body)
            else:
                return Response(status_code=415)
        except (DecodeError, json_format.ParseError, ValueError, AttributeError, TypeError) as exc:
            raise ParleyError(Codes.VALIDATION_FAILED, f"Not an OTLP trace export: {exc}") from exc
        store.add(spans_of(export))
        # OTLP/HTTP answers in the encoding of the request.
        if content_type == PROTOBUF:
            return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)
        return JSONResponse({})

    @app.get("/")
    async def index() -> RedirectResponse:
        return RedirectResponse("/traces")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/traces")
    async def traces(conversation_id: ConversationFilter = None) -> HTMLResponse:
        return _page(summaries=store.summaries(conversation_id=conversation_id), store=store)

    @app.get("/traces.json")
    async def traces_json(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200, conversation_id: ConversationFilter = None
    ) -> list[TraceSummary]:
        return store.summaries(limit, conversation_id)

    # Before `/traces/{trace_id}`, which would otherwise take `<id>.json` as an id.
    @app.get("/traces/{trace_id}.json")
    async def trace_json(trace_id: str) -> TraceTree:
        spans = store.get(trace_id.lower()) if _TRACE_ID.match(trace_id.lower()) else None
        if spans is None:
            raise ParleyError(Codes.NOT_FOUND, params={"resource": "trace"})
        return build_tree(trace_id.lower(), spans)

    @app.get("/traces/{trace_id}")
    async def trace_page(trace_id: str) -> HTMLResponse:
        spans = store.get(trace_id.lower()) if _TRACE_ID.match(trace_id.lower()) else None
        if spans is None:
            return _page(404, missing=trace_id)
        tree = build_tree(trace_id.lower(), spans)
        return _page(tree=tree, rows=_rows(tree))

    return app


def main() -> None:
    from parley_common.kit.runner import serve

    # Never export our own spans (to ourselves): the viewer has no instrumentation to trace.
    settings = TraceViewSettings(otlp_endpoint=None)
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
