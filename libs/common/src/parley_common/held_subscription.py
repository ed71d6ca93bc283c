"""A core subscription held for a session's life: no queue or task of its own while it is quiet.

nats-py gives every callback subscription an `asyncio.Queue` (four deques, ~3 KiB) and a task that
waits on it for as long as the subscription lives. A gateway holds two per session and a worker
one (the input bell): ~13 KiB of the gateway's and ~8 KiB of a worker's memory per held session
(docs/performance.md, change 72).

`subscribe_held` makes the same subscription (the same SUB, the same sid bookkeeping, resent on a
reconnect, ended by `unsubscribe` or the connection's close) whose pending messages are a deque,
delivered by a task that exists only while the deque is not empty. Delivery is the same: one
message at a time, in order, the callback's errors to the client's error callback; a callback
that awaits holds back the subscription's next message, never another subscription's.

It rests on three private members of nats-py's `Client` (`_sid`, `_subs`, `_send_subscribe`), the
steps of its own `subscribe`, the two members of `Subscription` its read loop and close touch
(`_pending_queue`, `_wait_for_msgs_task`) and two it sets up (`_cb`, `_pending_msgs_limit`);
`tests/test_held_subscription.py` runs it against a real server, so an upgrade of nats-py that
changes them fails there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import (
    DEFAULT_SUB_PENDING_BYTES_LIMIT,
    DEFAULT_SUB_PENDING_MSGS_LIMIT,
    Subscription,
)
from nats.errors import ConnectionClosedError, ConnectionDrainingError

log = structlog.get_logger(__name__)

Callback = Callable[[Msg], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]
Dropped = Callable[[], None]


class _Pending:
    """What nats-py's read loop puts the subscription's messages into (`put_nowait`, `qsize`,
    `empty`, `task_done`, `join`: all of `asyncio.Queue` it or `Subscription` use), delivering them
    from a task made when the first one arrives and gone when none is left."""

    __slots__ = ("_error_cb", "_idle", "_items", "_loop", "_sub")

    def __init__(self, sub: HeldSubscription) -> None:
        self._loop = asyncio.get_running_loop()  # once: on 3.11 each lookup is a system call
        self._sub = sub  # its callback and pending limit are the subscription's own
        self._error_cb: ErrorCallback | None = None
        self._items: deque[Msg] | None = None  # made with the first message
        self._idle: asyncio.Event | None = None  # only while someone waits in `join`

    def put_nowait(self, msg: Msg) -> None:
        if self._items is None:
            self._items = deque()
        elif 0 < self._sub._pending_msgs_limit <= len(self._items):
            if self._sub.on_dropped is not None:
                self._sub.on_dropped()  # before nats-py reports the slow consumer and drops it
            raise asyncio.QueueFull
        self._items.append(msg)
        if self._sub._wait_for_msgs_task is None:
            task = self._loop.create_task(self._deliver())
            # nats-py declares it None (it assigns its own task without an annotation).
            self._sub._wait_for_msgs_task = task  # type: ignore[assignment]

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def task_done(self) -> None:
        """Nothing to count: `join` waits for the delivery task's end."""

    async def join(self) -> None:
        """Until every message put so far has been delivered (`Subscription.drain`)."""
        if self._sub._wait_for_msgs_task is not None:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()

    async def _deliver(self) -> None:
        items, cb = self._items, self._sub._cb
        assert items is not None and cb is not None
        try:
            while items:
                msg = items.popleft()
                self._sub._pending_size -= len(msg.data)
                try:
                    await cb(msg)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the subscription or the connection ends
                    # The callback's own (it awaited something cancelled): its message is done
                    # with, the next ones still come (nats-py would stop the subscription).
                    log.warning("bus.callback_cancelled", subject=self._sub.subject)
                except Exception as exc:  # an async error, as nats-py reports its callbacks'
                    if self._error_cb is not None:
                        await self._error_cb(exc)
        finally:
            # Nothing can arrive between the loop's last look and here (no await): a message put
            # after this makes a new deque and task. Cancelled (the subscription or the connection
            # ends), what is left is dropped, as nats-py drops its queue.
            self._sub._wait_for_msgs_task = None
            self._items = None
            if self._idle is not None:
                self._idle.set()
                self._idle = None


class HeldSubscription(Subscription):
    """nats-py's `Subscription` with `_Pending` in place of its queue, and no task of its own."""

    def __init__(
        self, conn: Client, sid: int, subject: str, cb: Callback, on_dropped: Dropped | None, **limits: Any
    ) -> None:
        super().__init__(conn, sid, subject, cb=cb, **limits)
        self.on_dropped = on_dropped
        # The queue nats-py made above is dropped at once.
        self._pending_queue = _Pending(self)  # type: ignore[assignment]

    def _start(self, error_cb: ErrorCallback | None) -> None:
        # nats-py starts its waiting task here; a held subscription makes one per burst instead.
        self._pending_queue._error_cb = error_cb  # type: ignore[attr-defined]


async def subscribe_held(
    nc: Client,
    subject: str,
    cb: Callback,
    *,
    pending_msgs_limit: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
    pending_bytes_limit: int = DEFAULT_SUB_PENDING_BYTES_LIMIT,
    on_dropped: Dropped | None = None,
) -> Subscription:
    """`nc.subscribe(subject, cb=cb)` (the same limits, SUB, reconnect and unsubscribe), held
    without a queue or task while no message waits. For subjects Parley builds itself: the subject
    is not validated again. `on_dropped` is called when a message is dropped for
    `pending_msgs_limit` (nats-py checks the bytes limit before the subscription sees a message:
    give 0, no limit, to be told of every drop)."""
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining:
        raise ConnectionDrainingError
    nc._sid += 1
    sid = nc._sid
    sub = HeldSubscription(
        nc,
        sid,
        subject,
        cb,
        on_dropped,
        pending_msgs_limit=pending_msgs_limit,
        pending_bytes_limit=pending_bytes_limit,
    )
    sub._start(nc._error_cb)
    nc._subs[sid] = sub
    await nc._send_subscribe(sub)
    return sub
