"""A stopping worker leaves the Octavus subjects (`bus.leave`) without dropping the requests NATS
has already delivered to it: they are answered, on a real NATS server, and nothing new comes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import uuid4

import nats
import pytest
from faststream.nats import NatsBroker
from faststream.nats.subscriber.usecases import CoreSubscriber
from faststream.nats.subscriber.usecases.core_subscriber import ConcurrentCoreSubscriber
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from structlog.testing import capture_logs

from parley_common import subjects
from parley_common.auth_contract import Principal
from parley_common.octavus import sessions as wire
from parley_runtime import bus

PRINCIPAL = Principal(kind="api_key", credential_id=uuid4(), user_id=uuid4())


@dataclass
class Handlers:
    """Octavus handlers whose GET of session `slow` waits for `release` (the worker busy with it)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[str] = field(default_factory=list)

    async def get(self, req: wire.OctavusGetRequest) -> wire.OctavusReply:
        if req.session_id == "slow":
            self.busy.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(req.session_id)
                raise
        return wire.OctavusReply(ok=True, body=req.session_id)

    async def create(self, req: wire.OctavusCreateRequest) -> wire.OctavusReply:
        return wire.OctavusReply(ok=True)

    async def restore(self, req: wire.OctavusRestoreRequest) -> wire.OctavusReply:
        return wire.OctavusReply(ok=True)

    async def trigger(self, req: wire.OctavusTriggerRequest) -> wire.OctavusReply:
        return wire.OctavusReply(ok=True)


class Records(logging.Handler):
    """What the broker logs at WARNING or above (FastStream and nats-py's error callback)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Worker:
    handlers: Handlers
    broker: NatsBroker
    subscribers: list[CoreSubscriber]
    nc: Client  # a caller's connection
    logged: list[logging.LogRecord]

    def get_subscription(self) -> Subscription:
        get = subjects.OCTAVUS_SESSION_GET
        (sub,) = [s.subscription for s in self.subscribers if s.subject.template == get]
        assert sub is not None
        return sub

    async def get(self, session_id: str, timeout_s: float = 10) -> str | None:
        payload = wire.OctavusGetRequest(principal=PRINCIPAL, session_id=session_id).model_dump_json()
        msg = await self.nc.request(subjects.OCTAVUS_SESSION_GET, payload.encode(), timeout=timeout_s)
        return wire.OctavusReply.model_validate_json(msg.data).body

    async def busy_with_one_and_one_queued(
        self, timeout_s: float = 10
    ) -> tuple[asyncio.Task[str | None], asyncio.Task[str | None]]:
        """A GET the handler is busy with, and a second one delivered and queued behind it."""
        first = asyncio.create_task(self.get("slow", timeout_s))
        async with asyncio.timeout(5):
            await self.handlers.busy.wait()
        second = asyncio.create_task(self.get("queued", timeout_s))
        await _until(lambda: self.get_subscription().pending_msgs == 1)
        return first, second


@asynccontextmanager
async def octavus_worker(nats_url: str) -> AsyncIterator[Worker]:
    """The Octavus subscribers of a worker (`bus.subscribe_octavus`), the only member of the
    `runtime` queue group on the module's own server."""
    handlers = Handlers()
    records = Records()
    logger = logging.getLogger("test_bus.broker")
    logger.addHandler(records)
    broker = NatsBroker(nats_url, logger=logger)
    subscribers = bus.subscribe_octavus(broker, handlers)
    await broker.start()
    nc = await nats.connect(nats_url)
    try:
        yield Worker(handlers, broker, subscribers, nc, records.records)
    finally:
        handlers.release.set()
        await nc.close()
        await broker.stop()
        logger.removeHandler(records)


async def _until(check: Callable[[], bool], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def _no_responder(nc: Client, subject: str) -> bool:
    """Within 2 s, a request on `subject` (whose handler answers at once) finds no responder; one
    that the worker received as it left is answered all the same."""
    for _ in range(40):
        try:
            await nc.request(subject, b"{}", timeout=2)
        except NoRespondersError:
            return True
        except NatsTimeoutError:
            pytest.fail(f"a request on {subject} delivered as the worker left got no reply")
        await asyncio.sleep(0.05)
    return False


async def test_leaving_answers_the_requests_already_delivered(nats_url: str) -> None:
    """A request NATS delivered to the worker, queued behind one its handler is busy with, is
    answered after the worker left the subjects (it was dropped at the unsubscribe, and its caller
    answered 504 `bus.timeout`); a request sent meanwhile goes to no one here."""
    async with octavus_worker(nats_url) as w:
        first, second = await w.busy_with_one_and_one_queued()
        leaving = asyncio.create_task(bus.leave(w.subscribers, timeout_s=10))
        assert await _no_responder(w.nc, subjects.OCTAVUS_SESSION_CREATE), "the leaving worker took requests"
        assert not leaving.done() and not second.done()

        w.handlers.release.set()
        async with asyncio.timeout(5):
            assert await first == "slow"
            assert await second == "queued"
            await leaving
        with pytest.raises(NoRespondersError):
            await w.get("after", timeout_s=2)
        await w.broker.stop()  # the broker's own stop of the subscribers already left
        assert [r.getMessage() for r in w.logged] == []


async def test_leaving_cuts_a_handler_that_outlasts_its_timeout(nats_url: str) -> None:
    """A handler still busy at the timeout is cancelled, and what is queued behind it dropped: the
    leave is bounded. The broker stops cleanly after."""
    with capture_logs() as logs:
        async with octavus_worker(nats_url) as w:
            first, second = await w.busy_with_one_and_one_queued(timeout_s=1)
            async with asyncio.timeout(5):
                await bus.leave(w.subscribers, timeout_s=0.3)
            assert w.handlers.cancelled == ["slow"]
            for request in (first, second):
                with pytest.raises(NatsTimeoutError):
                    await request
            with pytest.raises(NoRespondersError):
                await w.get("after", timeout_s=2)
            await w.broker.stop()
            # FastStream logs the handler it saw cancelled, nothing else (its stop included).
            assert [r.getMessage() for r in w.logged] == ["CancelledError: "]
    cut = [e for e in logs if e["event"] == "octavus.leave_cut"]
    assert [(e["subject"], e["pending"]) for e in cut] == [(subjects.OCTAVUS_SESSION_GET, 1)]


def test_the_subscribers_a_worker_leaves_have_no_workers_of_their_own() -> None:
    """`leave` waits until a subscriber's nats-py queue is handled (`bus._drain`); FastStream's
    `max_workers` would hand each message on to a task of its own, which that wait does not see, so
    none of the subscribers left that way may have it."""
    subscribers = bus.subscribe_octavus(NatsBroker(), Handlers())
    assert len(subscribers) == 4
    for subscriber in subscribers:
        assert not isinstance(subscriber, ConcurrentCoreSubscriber), subscriber
