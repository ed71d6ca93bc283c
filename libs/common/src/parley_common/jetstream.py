"""JetStream through a broker outage: publishing that is stored once, durable consumers that go on.

**Publishing** (`publish_durably`). A JetStream publish is a request: nats-py buffers it while the
server is away and sends it once it is back, but the caller's wait for the ack times out first,
although the message is then stored. Retrying blindly stores it twice. So everything that must be
stored carries a `Nats-Msg-Id`, and the publication is retried under that same id until it is
acknowledged: JetStream drops the copies within the stream's duplicate window, the caller learns
the truth (stored, or, after `timeout_s`, an error), and a retry never doubles anything. While the
connection is down no new attempt is queued (one buffered copy is enough); an attempt is made as
soon as it is back.

**Durable consumers** (`DurableConsumer`): the fetch loop of a durable pull consumer shared by a
service's replicas (the catalog's conversation and test-result consumers, auth's mail inbox).

**Held messages** (`in_progress`): a worker's heartbeat for every message it holds, in one write.

Ordered readers, which also return after an outage, are in `parley_common.ordered_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    NoRespondersError,
    NotJSMessageError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from parley_common.outages import OUTAGE_ERRORS, describe
from parley_common.reply_inbox import request
from parley_common.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

ATTEMPT_S = 2.0  # one attempt's wait for the ack (then retried under the same id)
_POLL_S = 0.05
# What JetStream's ack of a plain publish holds (anything more is read by `PubAck.from_response`).
PUB_ACK_FIELDS = frozenset({"stream", "seq", "domain", "duplicate"})


async def wait_connected(nc: Client, deadline: float) -> bool:
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
    sent_headers = {**headers, "Nats-Msg-Id": msg_id} if headers else {"Nats-Msg-Id": msg_id}
    deadline = time.monotonic() + timeout_s
    delay = _POLL_S
    attempts = 0
    last: BaseException = TimeoutError(f"not connected to NATS within {timeout_s} s")
    while True:
        if not nc.is_connected and not await wait_connected(nc, deadline):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        try:
            ack = await _publish_once(nc, subject, payload, min(ATTEMPT_S, left), sent_headers)
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


async def api_request(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    no_responders: type[Exception] = ServiceUnavailableError,
) -> dict[str, Any]:
    """One JetStream request (a publish, or a call of `$JS.API`) and its JSON answer, as nats-py
    reads them: nobody to answer (JetStream or the stream away) raised as `no_responders`, an API
    error as its `APIError`. Through the connection's reply inbox (reply_inbox.py): a cancel of the
    caller as the answer arrives is not lost, as it is in `nc.request` on Python 3.11."""
    try:
        msg = await request(nc, subject, payload, timeout_s=timeout_s, headers=headers)
    except NoRespondersError:
        raise no_responders from None
    answer: dict[str, Any] = json.loads(msg.data)
    if "error" in answer:
        raise APIError.from_error(answer["error"])
    return answer


async def _publish_once(
    nc: Client, subject: str, payload: bytes, wait_s: float, headers: dict[str, str]
) -> PubAck:
    """One JetStream publish and its ack: `JetStreamContext.publish` without the context, which
    `nc.jetstream()` builds anew each time (an email header parser, an event, a semaphore), and
    the ack read into `PubAck` directly. The same request and the same errors: no responders (no
    stream, or JetStream away) as `NoStreamResponseError`, an API error as its `APIError`."""
    resp = await api_request(
        nc, subject, payload, timeout_s=wait_s, headers=headers, no_responders=NoStreamResponseError
    )
    if resp.keys() <= PUB_ACK_FIELDS:
        return PubAck(**resp)
    return PubAck.from_response(resp)


async def in_progress(messages: Iterable[Msg]) -> int:
    """`Msg.in_progress()` (`+WPI`: the ack wait starts again) for each of `messages`, written to
    their connection's buffer at once; returns how many.

    nats-py's `publish` takes 2 to 3 µs a message (its checks, the command's formatting, a look at
    the flusher each time): a worker holding 5,000 sessions spent that on each of them at every
    claim heartbeat. Here the commands are formatted together and handed over as one, after what
    `publish` checks first: a closed or draining connection refuses; while the server is away
    they are buffered like any publish, up to the client's pending limit (all or none). It uses
    the connection a message came on (`Msg._client`, as `Msg.in_progress` does) and four private
    members of nats-py's `Client` (`_max_pending_size`, `_send_command`, `_flush_queue`,
    `_flush_pending`), the steps of `publish` after its checks; `test_jetstream_in_progress.py`
    runs it against a real server.
    """
    by_client: dict[int, tuple[Client, list[str]]] = {}
    for msg in messages:
        if not msg.reply:
            raise NotJSMessageError
        by_client.setdefault(id(msg._client), (msg._client, []))[1].append(msg.reply)
    for nc, replies in by_client.values():
        await _progress(nc, replies)
    return sum(len(replies) for _, replies in by_client.values())


async def _progress(nc: Client, replies: list[str]) -> None:
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    progress = Msg.Ack.Progress
    commands = b"".join(b"PUB %s %d\r\n%s\r\n" % (r.encode(), len(progress), progress) for r in replies)
    pending_limit = nc._max_pending_size  # what `publish` checks while disconnected
    if not nc.is_connected and (pending_limit <= 0 or len(commands) + nc.pending_data_size > pending_limit):
        raise OutboundBufferLimitError
    nc.stats["out_msgs"] += len(replies)
    nc.stats["out_bytes"] += len(progress) * len(replies)
    await nc._send_command(commands)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()  # wake the flusher, as `publish` does


class Held(Protocol):
    """A message a worker holds in progress while a task works on it."""

    msg: Msg
    task: asyncio.Task[None] | None
    acked: bool


FETCH_TIMEOUT_S = 1.0  # how long a fetch waits for messages (its pull request's expiry)
STOP_GRACE_S = 2.0  # how long `DurableConsumer.stop` lets a batch end, beyond the fetch's own timeout


async def fetch_batch(
    sub: JetStreamContext.PullSubscription,
    batch: int,
    *,
    event: str,
    pause_s: float = 1.0,
    timeout_s: float = FETCH_TIMEOUT_S,
    **log_fields: Any,
) -> list[Msg]:
    """Up to `batch` messages, or none after a quiet `timeout_s`. Connection trouble is logged as
    `event` and waited out for `pause_s` (the client reconnects by itself), then none."""
    try:
        return await sub.fetch(batch, timeout=timeout_s)
    except (NatsTimeoutError, TimeoutError):
        return []
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning(event, error=f"{type(exc).__name__}: {exc}", **log_fields)
        await asyncio.sleep(pause_s)
        return []


async def hand_back(held: Iterable[Held]) -> None:
    """Stop the work on held messages and give every one not yet acked back to JetStream (nak),
    so another worker takes it at once."""
    held = list(held)
    await cancel_and_wait(*(entry.task for entry in held))
    for entry in held:
        if not entry.acked:
            with contextlib.suppress(Exception):
                await entry.msg.nak()


def file_stream(
    name: str,
    subject: str,
    max_age: float,
    duplicate_window: float,
    *,
    work_queue: bool = False,
    **limits: Any,
) -> StreamConfig:
    """A stream Parley defines, on disk, of one subject (pattern): a work queue (a message leaves at
    its ack) or kept within limits (`max_age` seconds, and `limits` such as `max_msgs_per_subject`).
    A message published again under its `Nats-Msg-Id` within `duplicate_window` seconds is stored once."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=duplicate_window,
        **limits,
    )


def by_name(*streams: StreamConfig) -> dict[str, StreamConfig]:
    return {stream.name: stream for stream in streams if stream.name}


def shared_durable(ack_wait_s: float = 30, **extra: object) -> ConsumerConfig:
    """The config of a durable pull consumer every replica of a service shares: explicit acks,
    from the start of the stream, at most 1000 messages in flight."""
    return ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=1000,
        **extra,  # type: ignore[arg-type]
    )


class DurableConsumer:
    """A durable pull consumer run as one task of a process: fetch a batch, `handle` each message.

    A subclass names what it consumes (`subject`, `stream`, `durable`, its `config` when not
    `shared_durable()`), creates the stream when missing (`prepare`) and says what a message does
    (`handle`, which acks, naks or terminates it); `tick` runs before every fetch (housekeeping).
    Connection trouble is logged and waited out: the client reconnects by itself. Stopping ends this
    process's subscription; the durable consumer stays on the server for the other replicas and the
    next run.
    """

    name = "consumer"  # the task's name, and `consumer` in the logs
    batch = 64
    # Under load, the shortest time between two batches (the second fetched after the first was
    # handled): messages arriving one by one gather into one batch (0: fetch again at once). After
    # a quiet spell at least that long, the first messages are handled as soon as they come.
    batch_wait_s = 0.0
    fetch_retry_s = 1.0
    # How long a quiet fetch waits; `stop` waits for the one under way, so a test that restarts
    # an app many times may shorten it.
    fetch_timeout_s = FETCH_TIMEOUT_S

    def __init__(
        self, *, subject: str, stream: str, durable: str, config: ConsumerConfig | None = None
    ) -> None:
        self.subject, self.stream, self.durable = subject, stream, durable
        self.config = config or shared_durable()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Messages this process applied, and those it found already applied (replays).
        self.applied = 0
        self.duplicates = 0

    async def ack(self, msg: Msg, *, applied: bool) -> None:
        """Ack a message handled for good, counting whether it changed anything."""
        if applied:
            self.applied += 1
        else:
            self.duplicates += 1
        await msg.ack()

    async def prepare(self, js: JetStreamContext) -> None:
        """Create the stream when it is missing (before subscribing)."""

    async def handle(self, msg: Msg) -> None:
        raise NotImplementedError

    async def tick(self) -> None:
        return None

    async def start(self, nc: Client) -> None:
        js = nc.jetstream()
        await self.prepare(js)
        self._sub = await js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=self.config
        )
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            # Let the fetch under way end (its pull request expires on the server just before the
            # client's timeout) and its batch be handled and acked, rather than cancel them: a
            # batch cut short, or a pull request left open on the server and handed the next
            # messages, leaves messages unacked until their ack wait (30 s) runs out.
            self._stopping.set()
            await asyncio.wait({self._task}, timeout=self.fetch_timeout_s + STOP_GRACE_S)
            await cancel_and_wait(self._task)
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        assert self._sub is not None
        loop = asyncio.get_running_loop()
        waiting_since = loop.time()  # the first fetch after the last batch started then
        while not self._stopping.is_set():
            await self.tick()
            messages = await fetch_batch(
                self._sub,
                self.batch,
                event="jetstream.fetch_failed",
                pause_s=self.fetch_retry_s,
                timeout_s=self.fetch_timeout_s,
                consumer=self.name,
            )
            await self.handle_batch(messages)
            if not messages:
                continue
            if len(messages) < self.batch:
                await self._gather(waiting_since + self.batch_wait_s - loop.time())
            waiting_since = loop.time()

    async def _gather(self, pause_s: float) -> None:
        """Let the next messages gather into one batch for what is left of `batch_wait_s` since the
        previous batch was handled (under load a fetch comes back at once). Messages that came after
        a quiet spell at least that long are followed by the next fetch at once, so that an event
        arriving alone is handled as soon as it comes. `stop` ends the pause."""
        if pause_s > 0:
            # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as the pause ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await self._stopping.wait()

    async def handle_batch(self, messages: list[Msg]) -> None:
        """What a fetch does: each message on its own, unless a subclass handles them together."""
        for msg in messages:
            await self.handle(msg)
