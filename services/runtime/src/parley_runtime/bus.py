"""Every bus subscription of a runtime worker, declared here and nowhere else.

Core NATS (FastStream subscribers, `register`, called once when the app is built):
- `catalog.events.agent.*`: fan-out to every worker; `agents.AgentCache.on_event`.
- `octavus.session.{create,get,restore,trigger}`: request/reply in queue `runtime`;
  `octavus/service.py`.
- `health.ping.runtime`: request/reply; answered by the service kit (`parley_common.kit`).

JetStream (nats-py directly, the hot path; consumer settings here):
- `sessions.start` on `SESSIONS`: work queue, durable `runtime`, pulled by `sessions/worker.py`.
- `agent_tests.run` on `AGENT_TESTS`: work queue, durable `runtime-agent-tests`, pulled by
  `agent_tests/worker.py`.
- `session.<id>.in` on `SESSION_IN`: no consumer per session. Each input the stream stores is
  republished by the stream on `session.<id>.in_stored` with its sequences, heard over core NATS
  (`session_input`, a `parley_common.held_subscription`: no queue or task while the session is
  quiet) by `sessions/inputs.InputFeed` (what the runner turns into turns: sessions/runner.py),
  which reads from the stream only what it can tell it missed.
- `$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.SESSION_IN`: core, one per worker
  (`watch_input_leader`): a new leader may not have republished an input, every feed looks.
- `session.<id>.out` on `SESSION_OUT`: an ordered push consumer per agent-test conversation,
  `agent_tests/conversation.py`.

"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from faststream.nats.subscriber.usecases import CoreSubscriber
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from parley_common import subjects
from parley_common.bus import BusEvents, bus_handler
from parley_common.held_subscription import subscribe_held
from parley_common.octavus import sessions as wire

log = structlog.get_logger(__name__)
OnMsg = Callable[[Msg], Awaitable[None]]


class OctavusHandlers(Protocol):
    """What answers the Octavus session subjects (octavus/service.py)."""

    async def create(self, req: wire.OctavusCreateRequest) -> wire.OctavusReply: ...
    async def get(self, req: wire.OctavusGetRequest) -> wire.OctavusReply: ...
    async def restore(self, req: wire.OctavusRestoreRequest) -> wire.OctavusReply: ...
    async def trigger(self, req: wire.OctavusTriggerRequest) -> wire.OctavusReply: ...


# ----------------------------------------------------------------------------- core NATS


def subscribe_agent_events(broker: NatsBroker, on_event: Callable[[Any], Awaitable[None]]) -> None:
    """Agent changes: every worker hears every event (no queue group) and drops its cached copy."""
    broker.subscriber(f"{subjects.CATALOG_AGENT_EVENTS}.*")(on_event)


def subscribe_octavus(broker: NatsBroker, octavus: OctavusHandlers) -> list[CoreSubscriber]:
    """The agent-sessions API, request/reply; the `runtime` queue group spreads it over workers.
    Returns its subscribers, which a stopping worker leaves first (`leave`)."""
    queue = subjects.QUEUE_RUNTIME
    routes: list[tuple[str, Any]] = [
        (subjects.OCTAVUS_SESSION_CREATE, bus_handler(wire.OctavusCreateRequest)(octavus.create)),
        (subjects.OCTAVUS_SESSION_GET, bus_handler(wire.OctavusGetRequest)(octavus.get)),
        (subjects.OCTAVUS_SESSION_RESTORE, bus_handler(wire.OctavusRestoreRequest)(octavus.restore)),
        (subjects.OCTAVUS_SESSION_TRIGGER, bus_handler(wire.OctavusTriggerRequest)(octavus.trigger)),
    ]
    subscribers: list[CoreSubscriber] = []
    for subject, handler in routes:
        subscriber = broker.subscriber(subject, queue=queue)
        subscriber(handler)
        subscribers.append(subscriber)
    return subscribers


async def leave(subscribers: list[CoreSubscriber], *, timeout_s: float) -> None:
    """Leave the subjects, all at once: the server delivers nothing more here, so the queue group's
    other members get what comes next, and every request already delivered (being handled, or
    queued behind one that is) is still answered, for up to `timeout_s`; then what is left is cut.
    A failure to leave one (a connection already closing) is raised after all were left."""
    left = await asyncio.gather(*(_drain(s, timeout_s) for s in subscribers), return_exceptions=True)
    for outcome in left:
        if isinstance(outcome, BaseException):
            raise outcome


async def _drain(subscriber: CoreSubscriber, timeout_s: float) -> None:
    """nats-py's `Subscription.drain` of a FastStream core subscriber: UNSUB and a flush (after the
    server's PONG, all it delivered has arrived), then wait until the subscription's callback has
    handled its queue. FastStream's `stop` would first set the subscriber not `running` (its
    callback then drops each queued message) and then unsubscribe (the queue discarded).

    Only for a subscriber without `max_workers`: its nats-py callback is the handler itself, so an
    empty queue means every message answered (with `max_workers` it only queues them further);
    tests/test_bus.py holds the Octavus subscribers to that."""
    sub = subscriber.subscription
    if sub is None:  # never started
        return
    # Its `stop`, below and again at the broker's stop, finds nothing to unsubscribe: nats-py
    # refuses to unsubscribe a drained subscription (BadSubscriptionError).
    subscriber.subscription = None
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    except TimeoutError:
        if not limit.expired():  # a flush without PONG
            raise
        log.warning("octavus.leave_cut", subject=sub.subject, pending=sub.pending_msgs, timeout_s=timeout_s)
    finally:
        # Cut short (timeout, failure, cancel): what `unsubscribe` does besides the UNSUB; the
        # handler still running is cancelled, the queue dropped. Both are no-ops after a drain.
        sub._stop_processing()
        sub._conn._remove_sub(sub._id)
    await subscriber.stop()  # not `running` any more; waits for a cancelled handler to unwind


def register(
    broker: NatsBroker, *, on_agent_event: Callable[[Any], Awaitable[None]], octavus: OctavusHandlers
) -> list[CoreSubscriber]:
    """Every core subscription of a worker (before the broker starts); returns the Octavus ones."""
    subscribe_agent_events(broker, on_agent_event)
    return subscribe_octavus(broker, octavus)


# ----------------------------------------------------------------------------- JetStream


@dataclass(frozen=True)
class WorkQueue:
    """A durable pull consumer every worker shares: each message goes to one worker, which holds
    it unacked (`in progress` every heartbeat) while it works on it, so a dead worker's messages
    are redelivered to another after `ack_wait`."""

    stream: str
    durable: str
    subject: str

    async def bind(self, js: JetStreamContext, *, ack_wait_s: float) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            # Redelivered without limit: the worker ends what keeps failing itself (max claims /
            # max attempts), with an answer to the client.
            max_deliver=-1,
            # Every running session (or test run) holds one unacked message: no cap below the
            # cluster's capacity.
            max_ack_pending=-1,
            filter_subject=self.subject,
        )
        await js.add_consumer(self.stream, config)
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)


SESSION_STARTS = WorkQueue(
    stream=subjects.SESSIONS_STREAM,
    durable=subjects.RUNTIME_SESSIONS_CONSUMER,
    subject=subjects.SESSION_START,
)
AGENT_TEST_JOBS = WorkQueue(
    stream=subjects.AGENT_TESTS_STREAM,
    durable=subjects.RUNTIME_AGENT_TESTS_CONSUMER,
    subject=subjects.AGENT_TEST_RUN,
)


async def session_input(
    nc: Client, conversation_id: UUID, on_msg: OnMsg, on_dropped: Callable[[], None]
) -> Subscription:
    """The session's inputs as `SESSION_IN` stores them, republished by the stream with their
    sequences (`subjects.session_in_stored`). No limit in bytes: nats-py drops for that before the
    subscription sees the message, and `on_dropped` must hear of every drop."""
    subject = subjects.session_in_stored(str(conversation_id))
    return await subscribe_held(nc, subject, on_msg, pending_bytes_limit=0, on_dropped=on_dropped)


async def watch_input_leader(nc: Client, events: BusEvents) -> Subscription:
    """Every input feed of the worker looks at the stream (`BusEvents.ring`) when `SESSION_IN` has a
    new leader: the old one may have stored an input it did not live to republish."""

    async def elected(_: Msg) -> None:
        log.info("session.input_leader_elected")
        events.ring()

    return await nc.subscribe(subjects.SESSION_IN_LEADER_ELECTED, cb=elected)


async def session_outputs(
    js: JetStreamContext, conversation_id: UUID, on_msg: OnMsg
) -> JetStreamContext.PushSubscription:
    """Everything a session has published so far and publishes from now on (an agent test reads
    its own conversation this way)."""
    return await js.subscribe(
        subjects.session_out(str(conversation_id)),
        stream=subjects.SESSION_OUT_STREAM,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
