"""Structured logging (structlog) with the current trace and span ids on every line.

Our own `structlog` loggers and the standard library's (uvicorn, FastStream, SQLAlchemy) go
through the same processors, so every line of a service's log is one JSON object (or one
readable console line with `PARLEY_LOG_JSON=false`). Ours render and write their line themselves
(`_LineWriter`), under the standard library handler's lock: through `logging` each line also
built a `LogRecord`, looked up its caller's frame (a walk up the stack that no line shows), passed
the root handler's filters and ran the formatter's processors, about half of what a line cost (a
line a session opened, and one per HTTP request).

No credential reaches a log line: the last step before rendering is `parley_common.redact`
(query strings such as uvicorn's `WebSocket /realtime?token=…`, Parley's key and token shapes,
cookie and authorization values, secret-named fields, tracebacks included). Libraries that dump raw
traffic or SQL parameters at DEBUG (frames, headers, rows) stay at INFO or WARNING whatever the level.

uvicorn's lines for every WebSocket it accepts, opens and closes are DEBUG here, not INFO: at
thousands of sessions they were most of a gateway's log and a measurable part of opening a session
(structlog renders and redacts each); the gateway's own `<protocol>.session_open` line says who
opened which session from where. A refused upgrade (`"WebSocket …" 403`) stays at INFO. The
gateway's WebSocket protocol logs through `PerConnectionLogger`, which drops those lines before
their record is built.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace

from parley_common.redact import redact_event

# Loggers that print wire traffic or SQL parameters when enabled below their floor.
_FLOORS = {
    "websockets": logging.INFO,
    "httpcore": logging.INFO,
    # httpx's INFO line is every outgoing URL: a webhook's may carry an agent secret anywhere.
    "httpx": logging.WARNING,
    "hpack": logging.INFO,
    "h11": logging.INFO,
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.WARNING,
    "asyncpg": logging.INFO,
    "aiosmtplib": logging.INFO,
}

# uvicorn's per-WebSocket INFO lines (the message templates its WebSocket protocols log with).
_PER_CONNECTION = frozenset({'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"})


class _PerConnectionAtDebug(logging.Filter):
    """uvicorn's per-WebSocket INFO lines, logged at DEBUG instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg in _PER_CONNECTION:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


_per_connection_at_debug = _PerConnectionAtDebug()


class PerConnectionLogger(logging.LoggerAdapter[logging.Logger]):
    """`logger` as a WebSocket protocol holds it (uvicorn's, and the websockets connection it
    makes): its per-connection INFO lines are dropped before a `LogRecord` is built unless the
    root logger takes DEBUG (then `_PerConnectionAtDebug` logs them at DEBUG, as for any other
    protocol). The filter alone drops them only after the record, its caller's frame and the
    logger's filters: two lines per socket opened and one per socket closed, ~9 µs of the
    gateway's CPU a socket (docs/performance.md, "The fourteenth round")."""

    @property
    def level(self) -> int:  # uvicorn's protocols compare it to their TRACE level
        return self.logger.level

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg in _PER_CONNECTION and not logging.getLogger().isEnabledFor(logging.DEBUG):
            return
        self.logger.info(msg, *args, **kwargs)


def _add_trace_ids(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


class _LineWriter:
    """The logger behind our structlog loggers: the rendered line to the process's current
    stderr, under `lock` (the standard library handler's, so lines of the two never interleave),
    and the `name` that `add_logger_name` reads."""

    __slots__ = ("lock", "name")

    def __init__(self, name: str, lock: Any) -> None:
        self.name, self.lock = name, lock

    def msg(self, message: str) -> None:
        with self.lock:
            stream = sys.stderr  # looked up per line: a test's capture, a redirected stream
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def setup_logging(service: str, level: str = "INFO", json_output: bool = True) -> None:
    def add_service(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        # A processor, not a context variable: a served request starts from an empty context
        # (`kit.runner.server_config`), and its lines name the service all the same.
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    last = [structlog.processors.format_exc_info, redact_event, renderer]
    handler = logging.StreamHandler(sys.stderr)
    lock = handler.lock

    def line_writer(*args: Any) -> _LineWriter:
        return _LineWriter(str(args[0]) if args else "root", lock)

    structlog.configure(
        processors=[*shared, *last],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=line_writer,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, floor in _FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []  # propagate to the root handler instead
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.error").addFilter(_per_connection_at_debug)  # once: the same object
