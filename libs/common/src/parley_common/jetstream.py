"""JetStream through a broker outage: publishing that is stored once, ordered readers that return.

**Publishing** (`publish_durably`). A JetStream publish is a request: nats-py buffers it while the
server is away and sends it once it is back, but the caller's wait for the ack times out first,
although the message is then stored. Retrying blindly stores it twice. So everything that must be
stored carries a `Nats-Msg-Id`, and the publication is retried under that same id until it is
acknowledged: JetStream drops the copies within the stream's duplicate window, the caller learns
the truth (stored, or, after `timeout_s`, an error), and a retry never doubles anything. While the
connection is down no new attempt is queued (one buffered copy is enough); an attempt is made as
soon as it is back.

**Ordered readers** (`OrderedReader`). An ordered consumer lives in the server's memory: a
restarted server has lost it, and nats-py notices only after two missed idle heartbeats (10-20 s).
A reader records the stream sequence of the last message it handed on and, on every reconnect,
creates its consumer again from the next one at once (retrying while JetStream is still loading),
dropping anything at or below that sequence if both consumers deliver for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck

from parley_common.bus import BusEvents
from parley_common.outages import OUTAGE_ERRORS, describe

log = structlog.get_logger(__name__)

ATTEMPT_S = 2.0  # one attempt's wait for the ack (then retried under the same id)
_POLL_S = 0.05


async def _connected(nc: Client, deadline: float) -> bool:
    """Wait until the connection is up (True), or the deadline passes (False)."""
    while not nc.is_connected:
        if nc.is_closed:
            raise ConnectionClosedError
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


async def publish_durably(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> PubAck:
    """Publish to a stream and wait for its ack, retried under `msg_id` until `timeout_s` passed
    (then the last error is raised: the message may not have been stored)."""
    js = nc.jetstream()
    sent_headers = {**(headers or {}), "Nats-Msg-Id": msg_id}
    deadline = time.monotonic() + timeout_s
    delay = _POLL_S
    attempts = 0
    last: BaseException = TimeoutError(f"not connected to NATS within {timeout_s} s")
    while True:
        if not await _connected(nc, deadline):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        try:
            ack = await js.publish(subject, payload, timeout=min(ATTEMPT_S, left), headers=sent_headers)
        except OUTAGE_ERRORS as exc:
            last = exc
            if attempts == 1:
                log.warning("bus.publish_retrying", subject=subject, error=describe(exc))
        else:
            if attempts > 1:
                log.info("bus.publish_stored", subject=subject, attempts=attempts, duplicate=ack.duplicate)
            return ack
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
    log.warning("bus.publish_failed", subject=subject, attempts=attempts, error=describe(last))
    raise last


OnMsg = Callable[[Msg], Awaitable[None]]


class OrderedReader:
    """One subject of a stream, in order, from `after_seq + 1` on, across broker restarts."""

    def __init__(
        self,
        nc: Client,
        events: BusEvents,
        *,
        stream: str,
        subject: str,
        on_msg: OnMsg,
        after_seq: int = 0,
    ) -> None:
        self.nc, self.events = nc, events
        self.stream, self.subject = stream, subject
        self.on_msg = on_msg
        self.last_seq = after_seq  # stream sequence of the last message handed on
        self._sub: JetStreamContext.PushSubscription | None = None
        self._unhook: Callable[[], None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def open(self) -> None:
        await self._subscribe()
        self._unhook = self.events.on_reconnect(self.restart)

    async def _subscribe(self) -> None:
        self._sub = await self.nc.jetstream().subscribe(
            self.subject,
            stream=self.stream,
            cb=self._deliver,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=self.last_seq + 1),
        )

    async def _deliver(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:  # the consumer before a restart delivered it already
            return
        self.last_seq = seq
        await self.on_msg(msg)

    async def restart(self) -> None:
        """Create the consumer again from the next sequence (after a reconnect)."""
        async with self._lock:
            old, self._sub = self._sub, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
            delay = _POLL_S
            while not self._closed:
                try:
                    async with self.events.consumer_gate:
                        await self._subscribe()
                    return
                except ConnectionClosedError:
                    return
                except Exception as exc:  # JetStream still loading, or the link dropped again
                    log.debug("bus.reader_restart_retry", subject=self.subject, error=describe(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def close(self) -> None:
        self._closed = True
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        async with self._lock:
            sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server reaps the consumer
                log.debug("bus.reader_unsubscribe_failed", subject=self.subject, error=str(exc))
