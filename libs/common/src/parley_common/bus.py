"""FastStream NATS broker factory and the request/reply helpers every service uses.

Trace context travels in NATS headers (W3C `traceparent`) through FastStream's telemetry
middleware, so a trace follows a request across services.

The connection reconnects forever, every `nats_reconnect_wait_s`; while it is away nats-py buffers
what is published and sends it once it is back. What must act on a reconnect (JetStream ordered
consumers, which a restarted server has lost; a runtime worker's claims) registers a hook with
`bus_events(broker).on_reconnect`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from parley_common import metrics
from parley_common.errors import Codes, ParleyError, envelope
from parley_common.outages import describe, is_outage
from parley_common.settings import CommonSettings

log = structlog.get_logger(__name__)

_NO_RESPONDERS_PAUSE_S = 0.1

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep", bound=BaseModel)


Hook = Callable[[], Awaitable[None]]


class BusEvents:
    """The ups and downs of a broker's NATS connection, for what must act on them."""

    def __init__(self) -> None:
        self._hooks: set[Hook] = set()
        self._running: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        # After a reconnect every ordered consumer of the process is created again, and every
        # session's input is looked at: a few at a time, so thousands of sessions do not flood
        # the JetStream API at once.
        self.consumer_gate = asyncio.Semaphore(32)
        self._broker: weakref.ref[NatsBroker] | None = None  # set by make_broker

    def on_reconnect(self, hook: Hook) -> Callable[[], None]:
        """Run `hook()` (as a task of its own) after every reconnect; returns the unregistering."""
        self._hooks.add(hook)
        return lambda: self._hooks.discard(hook)

    async def disconnected(self) -> None:
        # nats-py calls this on its own close too: a stop is no incident (its reconnects are
        # unlimited, so a closed connection is one this process closed).
        broker = self._broker() if self._broker is not None else None
        try:
            closed = broker is not None and broker.connection.is_closed
        except IncorrectState:  # no connection any more: the broker has stopped
            closed = True
        if closed:
            log.info("bus.closed")
        else:
            log.warning("bus.disconnected")

    async def reconnected(self) -> None:
        self.reconnects += 1
        log.info("bus.reconnected", hooks=len(self._hooks))
        self.ring()

    def ring(self) -> None:
        """Run every hook, as after a reconnect: also when core messages may have been lost without
        one (the runtime: a new leader of the stream that republishes its input)."""
        for hook in list(self._hooks):
            task = asyncio.create_task(self._run(hook))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    @staticmethod
    async def _run(hook: Hook) -> None:
        try:
            await hook()
        except Exception:
            log.exception("bus.reconnect_hook_failed")


_EVENTS: weakref.WeakKeyDictionary[NatsBroker, BusEvents] = weakref.WeakKeyDictionary()


def bus_events(broker: NatsBroker) -> BusEvents:
    """The connection events of a broker made by `make_broker` (a bare broker gets a silent one)."""
    events = _EVENTS.get(broker)
    if events is None:
        events = _EVENTS[broker] = BusEvents()
    return events


def make_broker(settings: CommonSettings, name: str | None = None) -> NatsBroker:
    """One NATS broker per process, with tracing middleware and unlimited reconnects."""
    events = BusEvents()
    broker = NatsBroker(
        settings.nats_url,
        name=name or settings.service_name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=settings.nats_reconnect_wait_s,  # type: ignore[arg-type]  # seconds, float ok
        # A connection that went silent (no TCP reset) is noticed after 2 unanswered pings.
        ping_interval=10,
        max_outstanding_pings=2,
        disconnected_cb=events.disconnected,
        reconnected_cb=events.reconnected,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=trace.get_tracer_provider())],
        logger=None,
    )
    events._broker = weakref.ref(broker)
    _EVENTS[broker] = events
    return broker


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
            except Exception as exc:
                if is_outage(exc):  # Redis or the bus is away: the caller may retry
                    log.warning(
                        "bus.handler_unavailable", subject=msg.raw_message.subject, error=describe(exc)
                    )
                    err = envelope(Codes.SERVICE_UNAVAILABLE)
                else:
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
    """Send a request over the bus and parse the reply; a silent bus becomes `bus.timeout`.

    "No responders" means nobody received the request (right after a broker restart the serving
    side may not have subscribed again yet), so it is sent again until `timeout` passed; a request
    that may have been received is never repeated."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    body = payload.model_dump_json(exclude_none=True)
    try:
        while True:
            try:
                msg = await broker.request(body, subject, timeout=max(0.05, deadline - time.monotonic()))
                break
            except NoRespondersError as exc:
                if time.monotonic() + _NO_RESPONDERS_PAUSE_S >= deadline:
                    raise ParleyError(Codes.BUS_TIMEOUT, params={"subject": subject}) from exc
                await asyncio.sleep(_NO_RESPONDERS_PAUSE_S)
            except (NatsTimeoutError, TimeoutError) as exc:
                raise ParleyError(Codes.BUS_TIMEOUT, params={"subject": subject}) from exc
    finally:
        metrics.BUS_REQUEST_SECONDS.labels(subject).observe(time.perf_counter() - started)
    try:
        return reply_model.model_validate_json(msg.body)
    except ValidationError as exc:
        raise ParleyError(Codes.INTERNAL, f"Malformed reply on {subject}") from exc


async def flushed(nc: Client, timeout: int = 1) -> None:  # noqa: ASYNC109 - nats-py owns the wait
    """Return once nats-server has read everything `nc` (a nats-py client) sent before this call:
    what it published, the subscriptions it made.

    `nc.flush()` alone does not promise it: nats-py (2.16) writes the flush's PING straight to the
    socket, while a command sent just before may still wait for the client's flusher task, so the
    PONG can come back before the server has read it. Here the flusher writes what waits first
    (nats-py's forced flush of its pending commands), then the PING follows it on the wire.

    Raises `TimeoutError` when either step takes longer than `timeout` (NATS not reading)."""
    # nats-py's forced flush swallows a cancel, so the timeout is read back rather than raised.
    async with asyncio.timeout(timeout) as written:
        await nc._flush_pending(force_flush=True)
    if written.expired():
        raise TimeoutError("NATS did not take the pending commands in time")
    await nc.flush(timeout=timeout)
