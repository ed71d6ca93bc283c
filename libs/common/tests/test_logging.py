"""Our loggers and stdlib loggers (uvicorn, FastStream) both write one JSON object per line."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from unittest import mock

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from parley_common.logging import PerConnectionLogger, setup_logging


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


def test_no_credential_reaches_a_line_even_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    key = "sk_live_" + "A1b2C3d4" * 5
    setup_logging("unit", "DEBUG", json_output=True)
    # What uvicorn's WebSocket protocol logs for every upgrade, with the client's query string.
    upgrade = f"/realtime?token={key}"
    logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", upgrade)
    structlog.get_logger("parley.test").info("call", token=key, headers={"Authorization": f"Bearer {key}"})
    try:
        raise ValueError(f"bad credential {key}")
    except ValueError:
        structlog.get_logger("parley.test").exception("failed")
    logging.getLogger("websockets.server").debug("< Cookie: parley_session=ps_%s", "x" * 40)
    logging.getLogger("sqlalchemy.engine.Engine").info("[generated] ('reset-password?token=abc',)")
    out = capsys.readouterr().err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert key not in out and "ps_xxxx" not in out and "token=abc" not in out
    assert [line["event"] for line in lines] == [
        '127.0.0.1:5 - "WebSocket /realtime?token=[redacted]" [accepted]',
        "call",
        "failed",
    ]  # wire frames and SQL parameters are not logged at DEBUG
    assert lines[1]["token"] == "[redacted]" and lines[1]["headers"]["Authorization"] == "[redacted]"
    assert "bad credential [redacted]" in lines[2]["exception"]
    structlog.reset_defaults()


def _socket_lines(logger: logging.Logger | PerConnectionLogger) -> None:
    """What uvicorn's WebSocket protocol (and websockets under it) log for sockets, and one more."""
    logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/realtime")
    logger.info("connection open")
    logger.info('%s - "WebSocket %s" 403', "127.0.0.1:6", "/realtime")
    logger.info("connection closed")
    logger.info("Application startup complete.")


@pytest.mark.parametrize("adapted", [False, True], ids=["filtered", "PerConnectionLogger"])
def test_uvicorns_per_websocket_lines_are_debug(capsys: pytest.CaptureFixture[str], adapted: bool) -> None:
    """The same lines whether uvicorn's logger or the gateway's `PerConnectionLogger` logs them; the
    adapter drops the per-socket ones before a record is built, the filter only after."""
    uvicorn = logging.getLogger("uvicorn.error")
    logger = PerConnectionLogger(uvicorn) if adapted else uvicorn
    setup_logging("unit", "INFO", json_output=True)
    real = logging.Logger.makeRecord
    with mock.patch.object(logging.Logger, "makeRecord", autospec=True, side_effect=real) as built:
        _socket_lines(logger)
    at_info = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(line["event"], line["level"]) for line in at_info] == [
        ('127.0.0.1:6 - "WebSocket /realtime" 403', "info"),  # a refusal stays
        ("Application startup complete.", "info"),
    ]
    assert built.call_count == (2 if adapted else 5)
    assert not adapted or logger.level == uvicorn.level  # uvicorn's protocols read it
    setup_logging("unit", "DEBUG", json_output=True)
    _socket_lines(logger)
    at_debug = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(line["event"], line["level"]) for line in at_debug] == [
        ('127.0.0.1:5 - "WebSocket /realtime" [accepted]', "debug"),
        ("connection open", "debug"),
        ('127.0.0.1:6 - "WebSocket /realtime" 403', "info"),
        ("connection closed", "debug"),
        ("Application startup complete.", "info"),
    ]
    assert len(uvicorn.filters) == 1  # set up twice, filtered once
    structlog.reset_defaults()


def test_our_lines_are_written_without_a_log_record(capsys: pytest.CaptureFixture[str]) -> None:
    """Our structlog lines skip the standard library's record, caller lookup and handler chain; the
    line is the same JSON object, with the logger's name."""
    setup_logging("unit", "INFO", json_output=True)
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(counting)
    try:
        structlog.get_logger("parley.test").info("ours", answer=42)
        structlog.get_logger("parley.test").debug("below the level")
        logging.getLogger("uvicorn.error").warning("theirs")
    finally:
        logging.setLogRecordFactory(factory)
    assert made and {r.name for r in made} == {"uvicorn.error"}  # theirs only (the formatter copies it)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == ["ours", "theirs"]
    assert {k: lines[0][k] for k in ("level", "logger", "service", "answer")} == {
        "level": "info",
        "logger": "parley.test",
        "service": "unit",
        "answer": 42,
    }
    assert lines[0]["timestamp"].endswith("Z")
    setup_logging("unit", "INFO", json_output=False)
    structlog.get_logger("parley.test").warning("readable", n=1)
    console = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err)  # without its colours
    assert "readable" in console and "n=1" in console and "[parley.test]" in console
    structlog.reset_defaults()


def test_a_line_from_an_empty_context_names_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    # A served request starts from an empty context (`kit.runner.server_config`), as here.
    setup_logging("unit", "INFO", json_output=True)
    contextvars.Context().run(structlog.get_logger("parley.test").info, "from a request")
    contextvars.Context().run(logging.getLogger("uvicorn.error").warning, "theirs from a request")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(line["event"], line["service"]) for line in lines] == [
        ("from a request", "unit"),
        ("theirs from a request", "unit"),
    ]
    structlog.reset_defaults()
