"""Telling an outage of a dependency (Redis, NATS, JetStream) from a bug, and waiting one out.

An outage is reported to clients as `service.unavailable` (503, or the protocol's error event) and
logged as a warning without a traceback; anything else is a bug (500 `internal.error`, logged with
its traceback). Work that must not be lost (a session's state write) waits the outage out with
`until_available`, up to a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from nats import errors as nats_errors
from nats.js import errors as js_errors
from redis import exceptions as redis_errors

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Exceptions that mean "a dependency did not answer", never "the request or the code is wrong".
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,  # includes "no connection available" of a full pool
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    nats_errors.TimeoutError,
    nats_errors.NoRespondersError,
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.OutboundBufferLimitError,
    nats_errors.StaleConnectionError,
    js_errors.ServiceUnavailableError,  # JetStream not (yet) available, e.g. right after a restart
    js_errors.NoStreamResponseError,
    ConnectionError,  # OSError family: refused, reset
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS)


def describe(exc: BaseException) -> str:
    """A short, credential-free description for logs (exception type and first line)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def until_available(
    call: Callable[[], Awaitable[T]], *, deadline_s: float, what: str, **log_fields: object
) -> T:
    """`await call()`, again and again with a growing pause while it fails with an outage error,
    until it succeeds or `deadline_s` passed (then the last error is raised). Only for calls that
    are safe to repeat (idempotent writes)."""
    started = time.monotonic()
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await call()
        except OUTAGE_ERRORS as exc:
            if time.monotonic() + delay > started + deadline_s:
                log.warning("outage.gave_up", what=what, error=describe(exc), attempts=attempt, **log_fields)
                raise
            if attempt == 1:
                log.warning("outage.waiting", what=what, error=describe(exc), **log_fields)
        else:
            if attempt > 1:
                waited = round(time.monotonic() - started, 3)
                log.info("outage.over", what=what, attempts=attempt, waited_s=waited, **log_fields)
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
