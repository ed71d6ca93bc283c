"""FastStream NATS broker factory and the request/reply helpers every service uses.

Trace context travels in NATS headers (W3C `traceparent`) through FastStream's telemetry
middleware, so a trace follows a request across services.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from parley_common import metrics
from parley_common.errors import Codes, ParleyError, envelope
from parley_common.settings import CommonSettings

log = structlog.get_logger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


def make_broker(settings: CommonSettings, name: str | None = None) -> NatsBroker:
    """One NATS broker per process, with tracing middleware and unlimited reconnects."""
    return NatsBroker(
        settings.nats_url,
        name=name or settings.service_name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=trace.get_tracer_provider())],
        logger=None,
    )


def bus_handler(
    request_model: type[Req],
) -> Callable[[Callable[[Req], Awaitable[BaseModel]]], Callable[[NatsMessage], Awaitable[dict[str, Any]]]]:
    """Wrap a request/reply handler so a malformed message gets an error reply, never a crash.

    The wrapped function receives a validated `request_model`; whatever it returns is sent back
    as JSON. A body that is not JSON, or not of the model's shape, is answered with
    `{"ok": false, "error": <Error envelope with code bus.bad_message>}`.
    """

    def decorate(
        fn: Callable[[Req], Awaitable[BaseModel]],
    ) -> Callable[[NatsMessage], Awaitable[dict[str, Any]]]:
        async def handler(msg: NatsMessage) -> dict[str, Any]:
            try:
                request = request_model.model_validate_json(msg.body)
            except ValidationError as exc:
                detail = exc.errors(include_url=False, include_input=False)[0]["msg"]
                log.warning("bus.bad_message", subject=msg.raw_message.subject, detail=detail)
                err = envelope(Codes.BUS_BAD_MESSAGE, params={"detail": detail})
                return {"ok": False, "error": err.model_dump(mode="json", exclude_none=True)}
            try:
                reply = await fn(request)
            except ParleyError as exc:
                return {"ok": False, "error": exc.envelope().model_dump(mode="json", exclude_none=True)}
            except Exception:
                log.exception("bus.handler_failed", subject=msg.raw_message.subject)
                err = envelope(Codes.INTERNAL)
                return {"ok": False, "error": err.model_dump(mode="json", exclude_none=True)}
            return reply.model_dump(mode="json", exclude_none=True)

        # Not functools.wraps: FastStream injects arguments from the signature, which must stay
        # the raw message, not the model the wrapped function takes.
        handler.__name__ = fn.__name__
        handler.__qualname__ = fn.__qualname__
        handler.__doc__ = fn.__doc__
        return handler

    return decorate


async def request(
    broker: NatsBroker,
    subject: str,
    payload: BaseModel,
    reply_model: type[Rep],
    *,
    timeout: float = 2.0,  # noqa: ASYNC109 - passed through to NATS, which owns the wait
) -> Rep:
    """Send a request over the bus and parse the reply; a silent bus becomes `bus.timeout`."""
    started = time.perf_counter()
    try:
        msg = await broker.request(payload.model_dump_json(exclude_none=True), subject, timeout=timeout)
    except (NatsTimeoutError, NoRespondersError, TimeoutError) as exc:
        raise ParleyError(Codes.BUS_TIMEOUT, params={"subject": subject}) from exc
    finally:
        metrics.BUS_REQUEST_SECONDS.labels(subject).observe(time.perf_counter() - started)
    try:
        return reply_model.model_validate_json(msg.body)
    except ValidationError as exc:
        raise ParleyError(Codes.INTERNAL, f"Malformed reply on {subject}") from exc


def dumps(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()


def loads(data: bytes) -> Any:
    return json.loads(data)
