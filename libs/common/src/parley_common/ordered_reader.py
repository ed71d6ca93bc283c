"""One subject of a stream, in order, from a sequence on, across broker restarts (`OrderedReader`).

An ordered consumer: an ephemeral push consumer in the server's memory, created from the next
stream sequence, delivering one message at a time with no acks, and created again whenever
something is lost. A restarted server has lost it, so a reader also creates it again on every
reconnect at once (retrying while JetStream is still loading), and drops anything at or below the
last sequence it handed on if two consumers deliver for a moment.

It is nats-py's ordered consumer (`js.subscribe(..., ordered_consumer=True)`) with the same
consumer and the same checks, made by hand (docs/performance.md, change 75): nats-py builds it
from its dataclasses (~80 `dataclasses.fields` look-ups a consumer), delivers it through a queue
and a task, and keeps two more tasks per consumer (a heartbeat check every 10 s, a flow-control
poll four times a second). A session's first input made one (~0.3 ms of the worker's CPU), and
each open session held one. Here:

- the consumer is created with one JetStream API request whose body is written here;
- its messages arrive on a held subscription (`subscribe_held`: no queue or task while quiet);
- a data message's consumer sequence must follow the last one, or a message was lost on the way
  (a slow consumer's drop): the consumer is created again from the next stream sequence;
- an idle heartbeat names the last consumer sequence the server sent; another than the last one
  received means the same; a stalled consumer's heartbeat is answered;
- a flow-control request is answered at once (a callback delivery: everything before it has been
  handed on);
- no heartbeat for two intervals (the consumer's server gone in a cluster, the client still
  connected elsewhere) creates it again: one timer per reader, not a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError

from parley_common.bus import BusEvents
from parley_common.held_subscription import subscribe_held
from parley_common.jetstream import api_request
from parley_common.outages import describe
from parley_common.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

OnMsg = Callable[[Msg], Awaitable[None]]

API_TIMEOUT_S = 5.0  # nats-py's JetStream default
_RETRY_FIRST_S, _RETRY_MAX_S = 0.05, 1.0
_STATUS, _CONTROL = "Status", "100"  # a heartbeat's or flow-control request's status line
_LAST_CONSUMER, _STALLED = "Nats-Last-Consumer", "Nats-Consumer-Stalled"
_NS = 1_000_000_000


def consumer_request(stream: str, subject: str, deliver_to: str, start_seq: int, heartbeat_s: float) -> bytes:
    """The body of `$JS.API.CONSUMER.CREATE.<stream>` for an ordered consumer: what nats-py sends
    for `ordered_consumer=True` from `start_seq`."""
    config = {
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": start_seq,
        "ack_policy": "none",
        "ack_wait": 22 * 3600 * _NS,
        "max_deliver": 1,
        "filter_subject": subject,
        "replay_policy": "instant",
        "flow_control": True,
        "idle_heartbeat": int(heartbeat_s * _NS),
        "deliver_subject": deliver_to,
        "num_replicas": 1,
        "mem_storage": True,
    }
    return json.dumps({"stream_name": stream, "config": config}, separators=(",", ":")).encode()


def sequences(reply: str) -> tuple[int, int] | None:
    """A delivered message's (stream, consumer) sequences from its ack subject:
    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the form with a
    domain and an account hash after `ACK` (12 tokens); None for anything else."""
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        return None
    try:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[6])
        if len(tokens) >= 11:
            return int(tokens[7]), int(tokens[8])
    except ValueError:
        return None
    return None


class OrderedReader:
    """One subject of a stream, in order, from `after_seq + 1` on, across broker restarts."""

    HEARTBEAT_S = 5.0  # the consumer's idle heartbeat; two missed ones create it again

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
        self._sub: Subscription | None = None  # the current consumer's delivery
        self._next_cseq = 1  # the consumer sequence its next data message must carry
        self._heard = True  # anything from the consumer since the last look (`_look`)
        self._look: asyncio.TimerHandle | None = None
        self._replacing: set[asyncio.Task[None]] = set()
        self._unhook: Callable[[], None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def open(self) -> None:
        await self._subscribe()
        self._unhook = self.events.on_reconnect(self.restart)
        self._schedule_look()

    async def _subscribe(self) -> None:
        inbox = self.nc.new_inbox()
        sub = await subscribe_held(self.nc, inbox, self._on_delivery)
        # Current before the consumer exists: its first message may come before the API's reply.
        self._sub, self._next_cseq, self._heard = sub, 1, True
        body = consumer_request(self.stream, self.subject, inbox, self.last_seq + 1, self.HEARTBEAT_S)
        try:
            await api_request(
                self.nc, f"$JS.API.CONSUMER.CREATE.{self.stream}", body, timeout_s=API_TIMEOUT_S
            )
        except BaseException:
            if self._sub is sub:
                self._sub = None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise

    async def _on_delivery(self, msg: Msg) -> None:
        sub = self._sub
        if sub is None or msg.sid != sub._id:
            return  # a consumer given up (lost messages, a restart): the next one resends
        self._heard = True
        headers = msg.headers
        if not msg.data and headers and headers.get(_STATUS) == _CONTROL:
            await self._on_control(msg, headers)
            return
        seqs = sequences(msg.reply)
        if seqs is None:
            log.warning("bus.reader_unexpected_message", subject=self.subject)
            return
        stream_seq, consumer_seq = seqs
        if consumer_seq != self._next_cseq:
            self._replace("gap")
            return
        self._next_cseq = consumer_seq + 1
        if stream_seq <= self.last_seq:
            return  # the consumer before a restart delivered it already
        self.last_seq = stream_seq
        await self.on_msg(msg)

    async def _on_control(self, msg: Msg, headers: dict[str, str]) -> None:
        if msg.reply:  # flow control: everything received before it has been handed on
            await self.nc.publish(msg.reply)
            return
        stalled = headers.get(_STALLED)
        if stalled:
            await self.nc.publish(stalled)
        last = headers.get(_LAST_CONSUMER)
        if last is not None and last.isdigit() and int(last) != self._next_cseq - 1:
            self._replace("gap")

    def _replace(self, why: str) -> None:
        """Give the consumer up and create it again from the next sequence, in a task of its own:
        unsubscribing ends the delivery that noticed, which may be the caller."""
        stale, self._sub = self._sub, None
        if stale is None or self._closed:
            return
        log.info("bus.reader_recreated", subject=self.subject, why=why, after_seq=self.last_seq)
        task = asyncio.ensure_future(self._replace_with_new(stale))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace_with_new(self, stale: Subscription) -> None:
        with contextlib.suppress(Exception):
            await stale.unsubscribe()
        await self.restart()

    def _schedule_look(self) -> None:
        loop = asyncio.get_running_loop()
        self._look = loop.call_later(2 * self.HEARTBEAT_S, self._look_for_heartbeats)

    def _look_for_heartbeats(self) -> None:
        self._look = None
        if self._closed:
            return
        # While disconnected nothing can arrive; the reconnect creates the consumer again anyway.
        if not self._heard and self._sub is not None and self.nc.is_connected:
            self._replace("no heartbeat")
        self._heard = False
        self._schedule_look()

    async def restart(self) -> None:
        """Create the consumer again from the next sequence (after a reconnect)."""
        async with self._lock:
            old, self._sub = self._sub, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
            delay = _RETRY_FIRST_S
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
                delay = min(delay * 2, _RETRY_MAX_S)

    async def close(self) -> None:
        self._closed = True
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        look, self._look = self._look, None
        if look is not None:
            look.cancel()
        for task in list(self._replacing):
            await cancel_and_wait(task)
        async with self._lock:
            sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server reaps the consumer
                log.debug("bus.reader_unsubscribe_failed", subject=self.subject, error=str(exc))
