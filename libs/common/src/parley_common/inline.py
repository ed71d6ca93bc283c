"""Subscriptions handled in nats-py's read loop: no queue, no task and no `Msg` per subscription.

nats-py gives every subscription with a callback an `asyncio.Queue` and a task of its own: each
message is built into a `Msg` (its headers parsed), queued, and handed to the callback one task
step later. For what the gateway holds per socket (a session's output and control subscriptions)
that is a queue and a task per subscription kept for the socket's life, and a task hop per
message; for an acked publication's reply it is the request machinery's own subscription task.

An *inline* subscription (`subscribe_inline`) is nats-py's own subscription (subscribed,
resubscribed after a reconnect, unsubscribed like any other), but its messages never reach
nats-py's queue: the client's `_process_msg` is wrapped once per client and hands the raw message
of an inline subscription (subject, body, raw headers) to a plain function, in the read loop, in
the order the server sent them. Every other subscription goes through nats-py as before.

A handler must return at once. To run async work from it, `start_eagerly` runs a coroutine now,
up to its first real suspension, and gives it a task only if it suspends (what Python 3.12's eager
tasks do; this is 3.11): a session's output usually goes to its socket without ever waiting, and a
delivery that does wait (a socket whose buffer is full) keeps its place, because each delivery
takes the reader's `asyncio.Lock`, whose waiters are served in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger(__name__)

# subject, body, raw headers (`NATS/1.0 ...`, None without): called in nats-py's read loop
InlineHandler = Callable[[bytes, bytes, bytes | None], None]

_STATUS_LINE = b"NATS/1.0 "


def status_of(headers: bytes | None) -> bytes | None:
    """The inline status of a message's raw headers (`503` for no responders), if any."""
    if headers and headers.startswith(_STATUS_LINE):
        return headers[len(_STATUS_LINE) : len(_STATUS_LINE) + 3]
    return None


class _Routes:
    """One client's inline subscriptions by sid, and the wrapper of its `_process_msg`."""

    def __init__(self, nc: Client) -> None:
        self.handlers: dict[int, InlineHandler] = {}
        self.stats = nc.stats
        self._process_msg = nc._process_msg
        nc._process_msg = self.process_msg  # type: ignore[method-assign]

    async def process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self.handlers.get(sid)
        if handler is None:
            await self._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            handler(subject, data, headers)
        except (Exception, asyncio.CancelledError):  # the handler's own: never the read loop's
            log.exception("bus.inline_handler_failed", subject=subject.decode(errors="replace"))


def _routes(nc: Client) -> _Routes:
    routes: _Routes | None = getattr(nc, "_parley_inline", None)
    if routes is None:
        routes = _Routes(nc)
        nc._parley_inline = routes  # type: ignore[attr-defined]
    return routes


def _raw_headers(msg: Msg) -> bytes | None:
    """What the handler would have been given for a message nats-py already parsed (only its
    status matters to the handlers here)."""
    if not msg.headers:
        return None
    status = msg.headers.get("Status")
    return _STATUS_LINE + status.encode() + b"\r\n\r\n" if status else b"NATS/1.0\r\n\r\n"


class InlineSubscription:
    def __init__(self, routes: _Routes, sub: Subscription) -> None:
        self._routes, self._sub = routes, sub

    @property
    def subject(self) -> str:
        return self._sub.subject

    async def unsubscribe(self) -> None:
        # The handler stays until nats-py has let the subscription go (it raises when the
        # connection is closed or draining: then messages may still come, and go to the handler).
        await self._sub.unsubscribe()
        self._routes.handlers.pop(self._sub._id, None)


async def subscribe_inline(nc: Client, subject: str, handler: InlineHandler) -> InlineSubscription:
    """Subscribe `subject` with `handler` called in the read loop for each message."""
    routes = _routes(nc)

    async def unused(msg: Msg) -> None:  # nats-py wants a callback to start no iterator
        handler(msg.subject.encode(), msg.data, _raw_headers(msg))

    sub = await nc.subscribe(subject, cb=unused)
    routes.handlers[sub._id] = handler
    # nats-py's subscribe queues the SUB for its flusher without letting the loop run, so nothing
    # can have been queued for this subscription yet; should that ever change, what was is handed
    # on first, in order. Its task then has nothing to do: it is stopped (a task and a coroutine
    # frame held per subscription).
    queue = sub._pending_queue
    while not queue.empty():
        msg = queue.get_nowait()
        queue.task_done()
        sub._pending_size -= len(msg.data)
        handler(msg.subject.encode(), msg.data, _raw_headers(msg))
    task = sub._wait_for_msgs_task
    if task is not None:
        task.cancel()
        sub._wait_for_msgs_task = None
    sub._pending_queue = _NO_QUEUE  # type: ignore[assignment]  # its queue too (~2.5 KiB: four deques)
    return InlineSubscription(routes, sub)


class _NoQueue:
    """What nats-py reads of an inline subscription's pending queue: always empty. Nothing is put
    in it (its messages go to the handler); should nats-py ever do so, the message is dropped."""

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def put_nowait(self, msg: Msg) -> None:
        log.warning("bus.inline_message_dropped", subject=msg.subject)

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None


_NO_QUEUE = _NoQueue()


# ----------------------------------------------------------------------------- eager start


def start_eagerly(
    coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
) -> asyncio.Task[None] | None:
    """Run `coro` in `context` (None: the caller's) now, up to its first suspension; a task
    finishes it only if it suspends (returned; None when it already finished). An exception
    raised before it suspends is raised here."""
    try:
        yielded = coro.send(None) if context is None else context.run(coro.send, None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(_finish(coro, yielded), context=context)
    task.add_done_callback(_log_failure)
    return task


async def _finish(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    """Drive a coroutine that suspended on `yielded` (a future, or None for a bare yield) to its
    end, as its task would have: it is resumed once what it waits for is done, and sees how it
    ended (a result, an exception, a cancellation) when it reads it. Cancelling this task cancels
    the future it waits for, so the coroutine sees the `CancelledError` as it would in a task."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False  # as a task does with what it is given
                await yielded
        except BaseException:
            if yielded is not None and not yielded.done():  # not the future's outcome: give up
                coro.close()
                raise
            # the coroutine reads the outcome (a cancellation of this task included) from it
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("bus.inline_delivery_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)


class SequencedSubscription:
    """An inline subscription whose messages each start a coroutine (`start(body)`, None: nothing
    to do), run at once and one after the other: one that has to wait makes the next ones wait for
    it, as a subscription's task handling them in turn would."""

    def __init__(self, start: Callable[[bytes], Coroutine[Any, Any, None] | None]) -> None:
        self._start = start
        self._context = contextvars.copy_context()
        self._tail: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Task[None]] = set()  # those that had to wait
        self._sub: InlineSubscription | None = None

    def on_msg(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        coro = self._start(data)
        if coro is None:
            return
        tail = self._tail
        if tail is not None and not tail.done():
            coro = _after(tail, coro)
        self._tail = task = start_eagerly(coro, self._context)
        if task is not None:
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)

    async def unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        self._tail = None
        for task in list(self._waiting):  # as nats-py stopped a subscription's task: not awaited
            task.cancel()
        if sub is not None:
            await sub.unsubscribe()


async def _after(previous: asyncio.Task[None], coro: Coroutine[Any, Any, None]) -> None:
    try:
        await asyncio.wait([previous])
    except BaseException:
        coro.close()
        raise
    await coro


async def subscribe_sequenced(
    nc: Client, subject: str, start: Callable[[bytes], Coroutine[Any, Any, None] | None]
) -> SequencedSubscription:
    """Subscribe `subject` inline; each message's `start(body)` run in turn (see
    `SequencedSubscription`), in a copy of the caller's context."""
    sequenced = SequencedSubscription(start)
    sequenced._sub = await subscribe_inline(nc, subject, sequenced.on_msg)
    return sequenced


# ----------------------------------------------------------------------------- acks


class AckInbox:
    """One client's inbox for the replies to its acked publications (`_INBOX.<nuid>.<n>`), read
    inline: a reply completes its publisher's future in the read loop. Kept by nats-py across
    reconnects."""

    def __init__(self, nc: Client) -> None:
        self.prefix = f"{nc.new_inbox()}."
        self._prefix_len = len(self.prefix)
        self.waiting: dict[bytes, asyncio.Future[tuple[bytes, bytes | None]]] = {}
        self.sub: InlineSubscription | None = None
        self.lock = asyncio.Lock()
        self._tokens = itertools.count()

    def expect(self) -> tuple[str, asyncio.Future[tuple[bytes, bytes | None]]]:
        """A reply subject, and the future its reply (body, raw headers) completes."""
        token = str(next(self._tokens))
        future: asyncio.Future[tuple[bytes, bytes | None]] = asyncio.get_running_loop().create_future()
        self.waiting[token.encode()] = future
        return f"{self.prefix}{token}", future

    def forget(self, reply: str) -> None:
        self.waiting.pop(reply[self._prefix_len :].encode(), None)

    def deliver(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        future = self.waiting.pop(subject[self._prefix_len :], None)
        if future is not None and not future.done():
            future.set_result((data, headers))


async def ack_inbox(nc: Client) -> AckInbox | None:
    """The client's ack inbox; None when it cannot subscribe (closing, draining)."""
    inbox: AckInbox | None = getattr(nc, "_parley_acks", None)
    if inbox is None:
        inbox = AckInbox(nc)
        nc._parley_acks = inbox  # type: ignore[attr-defined]
    if inbox.sub is None:
        async with inbox.lock:
            if inbox.sub is None:
                try:
                    inbox.sub = await subscribe_inline(nc, f"{inbox.prefix}*", inbox.deliver)
                except Exception:
                    return None
    return inbox
