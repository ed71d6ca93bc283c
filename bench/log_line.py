"""What one of Parley's log lines costs: written by structlog itself (`parley_common.logging`),
against the same line handed to the standard library's `logging` (a `LogRecord`, the caller's
frame looked up, the root handler's filters, the formatter's processors), in one process.

    python -m bench.log_line [--count 20000] [--rounds 5]

The line is the gateway's `realtime.session_open` (one per session opened; each HTTP request's
access line costs the same), rendered as JSON to /dev/null. See docs/performance.md, "Log lines
that write themselves".

Then a socket's two per-connection lines that nobody reads below DEBUG (uvicorn's "[accepted]",
websockets' "connection open"): dropped by the logger's filter once their record is built, against
dropped before it by the gateway's `PerConnectionLogger` (docs/performance.md, "The fourteenth
round").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

import structlog

from parley_common.logging import PerConnectionLogger, setup_logging
from parley_common.redact import redact_event


def through_logging() -> None:
    """`setup_logging`, but with our lines handed to `logging` (as every line was before)."""
    setup_logging("bench", "INFO", json_output=True)
    processors = structlog.get_config()["processors"]
    # The processors before the last ones (exception text, redaction, rendering), which the
    # handler's formatter runs on this path.
    shared = processors[: processors.index(structlog.processors.format_exc_info)]
    assert redact_event in processors[len(shared) :]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )


def written_directly() -> None:
    setup_logging("bench", "INFO", json_output=True)


def line_us(setup: Callable[[], None], count: int) -> float:
    setup()
    log = structlog.get_logger("parley_session_gateway.connection").bind(
        conversation_id="5f0c3a7e-6a43-4f59-9a36-0d3e0f0e8a11", protocol="realtime"
    )
    started = time.process_time()
    for _ in range(count):
        log.info(
            "realtime.session_open", agent_id="a1b2", user_id="u1", channel="web", client="127.0.0.1:5555"
        )
    return (time.process_time() - started) / count * 1e6


def socket_lines_us(logger: logging.Logger | PerConnectionLogger, count: int) -> float:
    """CPU per socket of the two lines uvicorn's WebSocket protocol logs as it opens one."""
    started = time.process_time()
    for _ in range(count):
        logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5555", "/realtime?token=x")
        logger.info("connection open")
    return (time.process_time() - started) / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.log_line", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="lines per round and path")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    paths = {"through logging": through_logging, "written directly": written_directly}
    best = {name: float("inf") for name in paths}
    uvicorn = logging.getLogger("uvicorn.error")
    sockets: dict[str, logging.Logger | PerConnectionLogger] = {
        "the filter": uvicorn,
        "PerConnectionLogger": PerConnectionLogger(uvicorn),
    }
    best_socket = {name: float("inf") for name in sockets}
    stderr = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            for _ in range(args.rounds):  # alternated, so both see the same machine
                for name, setup in paths.items():
                    best[name] = min(best[name], line_us(setup, args.count))
                setup_logging("bench", "INFO", json_output=True)
                for name, logger in sockets.items():
                    best_socket[name] = min(best_socket[name], socket_lines_us(logger, args.count))
        finally:
            sys.stderr = stderr
            structlog.reset_defaults()
            logging.getLogger().handlers.clear()
    base = best["through logging"]
    print("path              CPU µs/line  ratio")
    for name, us in best.items():
        print(f"{name:<18}{us:>11.1f}{us / base:>7.2f}")
    base = best_socket["the filter"]
    print("a socket's lines dropped by   CPU µs/socket  ratio")
    for name, us in best_socket.items():
        print(f"{name:<29}{us:>14.2f}{us / base:>7.2f}")


if __name__ == "__main__":
    main()
