"""A numbered subject of a stream, read over core NATS, with the stream as the truth for gaps.

A message published on a subject a stream captures is delivered to the subject's core subscribers
as well. `NumberedReader` reads a subject whose messages carry consecutive numbers (`index`, as
`SessionOutput`s do) with one core subscription, and hands each number on once, in order. That
costs no JetStream consumer while all is well: no consumer to create and delete per reader, no idle
heartbeat, no ack metadata per message.

Core NATS loses what is published while a subscriber is away, so the stream is read (a *catch-up*)
whenever something may be missing:

- at `open(catch_up=True)`: a reader resuming a subject that already has messages;
- after every reconnect: what was published while the connection was down;
- when a message arrives whose number is beyond the next one expected (a gap).

A catch-up asks the stream for the subject's last message (`get_last_msg`, its number `L`) and,
when `L` is beyond what was handed on, reads the subject from the stream's start with a temporary
ordered consumer until `L` was handed on, then drops it. It looks twice, `settle_s` apart (the
stream stores a message a moment after core delivered it, so a message published as the
subscription was being made may not be stored yet at the first look). Messages that arrive over
core meanwhile are handed on at once when they are the next number, and held otherwise.

Numbers may be missing for good: a plain publish lost with the publisher's connection leaves a gap
in the stream too. So a message the stream delivers stands for every missing number below it (it
releases what is held below it), and at the end of a catch-up whatever is held is handed on in
order, gaps and all, except what arrived during that round and is beyond the stream's last number
at its second look (the next round, which its arrival asked for, decides those): a gap the stream
does not fill never stalls the reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js.errors import NotFoundError

from parley_common.bus import BusEvents
from parley_common.held_subscription import subscribe_held
from parley_common.jetstream import wait_connected
from parley_common.ordered_reader import OrderedReader
from parley_common.outages import OUTAGE_ERRORS, describe
from parley_common.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
T = TypeVar("T")

SETTLE_S = 0.25  # between a catch-up's two looks at the stream
RETRY_S = 0.5  # before a catch-up round interrupted by an error starts again
STALL_S = 5.0  # a catch-up's read that receives nothing for this long gives up (stream purged?)


class NumberedReader(Generic[T]):
    """`deliver` each number of `subject` once, in order, after `after` (call `open`, `close`).

    `decode` turns a message body into an item (None: invalid, dropped; it logs), `index_of` gives
    an item's number."""

    def __init__(
        self,
        nc: Client,
        events: BusEvents,
        *,
        stream: str,
        subject: str,
        decode: Callable[[bytes], T | None],
        index_of: Callable[[T], int],
        deliver: Callable[[T], Awaitable[None]],
        after: int = 0,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.nc, self.events = nc, events
        self.stream, self.subject = stream, subject
        self.decode, self.index_of, self.deliver = decode, index_of, deliver
        self.last_index = after  # the last number handed on
        self.settle_s = settle_s
        self.catch_ups = 0  # rounds run (for tests and logs)
        self._held: dict[int, tuple[T, int]] = {}  # number → (item, the round it arrived in)
        self._lock = asyncio.Lock()  # one hand-over at a time, from core or from the stream
        self._sub: Subscription | None = None
        self._unhook: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._closed = False
        self._round = 0  # incremented when a catch-up round takes its first look

    async def open(self, *, catch_up: bool) -> None:
        """Subscribe; `catch_up`: the stream may already hold numbers after `after`."""
        self._sub = await subscribe_held(self.nc, self.subject, self._on_core)
        self._unhook = self.events.on_reconnect(self._reconnected)
        if catch_up:
            self.request_catch_up()

    async def close(self) -> None:
        self._closed = True
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        task, self._task = self._task, None
        await cancel_and_wait(task)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server cleans up
                log.debug("bus.reader_unsubscribe_failed", subject=self.subject, error=str(exc))

    # ----------------------------------------------------------------------------- hand-over

    async def _on_core(self, msg: Msg) -> None:
        item = self.decode(msg.data)
        if item is None:
            return
        async with self._lock:
            await self._offer(self.index_of(item), item)
            gap = bool(self._held)
        if gap:
            self.request_catch_up()

    async def _offer(self, index: int, item: T) -> None:
        """Hand on the next number (and what it unblocks), hold a later one, drop an earlier one."""
        if index <= self.last_index:
            return  # delivered already
        if index > self.last_index + 1:
            self._held.setdefault(index, (item, self._round))
            return
        await self._hand_on(index, item)
        await self._hand_on_held()

    async def _hand_on(self, index: int, item: T) -> None:
        self.last_index = index
        await self.deliver(item)

    async def _hand_on_held(self) -> None:
        """Hand on the held numbers that now follow the last one, in order."""
        while (held := self._held.pop(self.last_index + 1, None)) is not None:
            await self._hand_on(self.last_index + 1, held[0])

    async def _release(self, below: int | None = None) -> None:
        """Hand on, in order, what is held below `below` (None: everything): the stream has nothing
        more before it."""
        for index in sorted(i for i in self._held if below is None or i < below):
            item, _ = self._held.pop(index)
            if index > self.last_index:
                await self._hand_on(index, item)
        await self._hand_on_held()

    async def _on_stream(self, msg: Msg) -> None:
        item = self.decode(msg.data)
        if item is None:
            return
        index = self.index_of(item)
        async with self._lock:
            await self._release(below=index)
            await self._offer(index, item)

    # ----------------------------------------------------------------------------- catch-up

    def request_catch_up(self) -> None:
        """Read the stream for anything missed (a round starts, or one more follows the current)."""
        if self._closed:
            return
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._catch_up(), name=f"catch-up {self.subject}")

    async def _reconnected(self) -> None:
        self.request_catch_up()

    async def _catch_up(self) -> None:
        while self._wanted:
            self._wanted = False
            self._round += 1
            self.catch_ups += 1
            first = self._round
            try:
                await self._read_to_last()
                await asyncio.sleep(self.settle_s)
                last = await self._read_to_last()
            except ConnectionClosedError:
                return
            except Exception as exc:  # the link dropped (the reconnect asks again), JetStream busy
                report = log.debug if isinstance(exc, OUTAGE_ERRORS) else log.warning
                report("bus.catch_up_interrupted", subject=self.subject, error=describe(exc))
                await asyncio.sleep(RETRY_S)
                if not await wait_connected(self.nc, time.monotonic() + 3600):
                    return
                self._wanted = True
                continue
            async with self._lock:
                # What the stream lacks will not come: hand on what is held, except what arrived
                # during this round beyond the stream's last number (the next round settles it).
                keep = min((i for i, (_, r) in self._held.items() if r == first and i > last), default=None)
                await self._release(below=keep)

    async def _last_stored(self) -> int:
        try:
            async with self.events.consumer_gate:
                msg = await self.nc.jetstream().get_last_msg(self.stream, self.subject)
        except NotFoundError:
            return 0
        item = self.decode(msg.data or b"")
        return 0 if item is None else self.index_of(item)

    async def _read_to_last(self) -> int:
        """One look: the stream's last number, and everything up to it handed on."""
        last = await self._last_stored()
        if last <= self.last_index:
            return last
        # The consumer's callback only queues: this task hands on, so closing the consumer (or
        # its restart after a reconnect) can never cut a hand-over short.
        received: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            received.put_nowait(msg)

        reader = OrderedReader(self.nc, self.events, stream=self.stream, subject=self.subject, on_msg=on_msg)
        async with self.events.consumer_gate:
            await reader.open()
        try:
            while self.last_index < last:
                try:
                    async with asyncio.timeout(STALL_S):  # not wait_for: it can lose close's cancel
                        msg = await received.get()
                except TimeoutError:  # the stream no longer has it (purged, expired)
                    log.warning("bus.catch_up_stalled", subject=self.subject, last=last, at=self.last_index)
                    break
                await self._on_stream(msg)
                if msg.metadata.num_pending == 0:
                    break  # the end of the stream: whatever is missing is not there
        finally:
            await reader.close()
        return last
