"""Our loggers and stdlib loggers (uvicorn, FastStream) both write one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from parley_common.logging import setup_logging


def test_structlog_and_stdlib_lines_are_json_with_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("unit", "INFO", json_output=True)
    tracer = TracerProvider().get_tracer("t")
    with trace.use_span(tracer.start_span("op"), end_on_exit=True):
        structlog.get_logger("parley.test").info("ours", answer=42)
        logging.getLogger("uvicorn.error").warning("theirs %s", "x")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    ours = next(line for line in lines if line["event"] == "ours")
    theirs = next(line for line in lines if line["event"] == "theirs x")
    assert ours["answer"] == 42 and ours["service"] == "unit" and len(ours["trace_id"]) == 32
    assert theirs["level"] == "warning" and theirs["logger"] == "uvicorn.error" and "trace_id" in theirs
    structlog.reset_defaults()
