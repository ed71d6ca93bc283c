"""A session's input, as its owner reads it.

Input is heard, not consumed: `SESSION_IN` republishes each input it stores on
`session.<id>.in_stored` (core NATS) with its stream sequence and the sequence of the input stored
before it on the same subject, and the worker subscribes to that (`bus.session_input`). An input
whose previous sequence is the last one read follows it: nothing was missed, and no consumer, no
JetStream API call and no idle heartbeat is needed for the session's life (an ordered consumer per
session cost nats-server four times the CPU at a session's first input and ~65 KiB more while it
lived: `python -m bench.input_path`; docs/performance.md, change 76). What core NATS can lose, the
stream still holds, and the worker reads it (`InputFeed._catch_up`, one `STREAM.MSG.GET` per input)
when it can tell it missed something: an input whose previous sequence is past the last one read; a
drop for the subscription's pending limit; a reconnect (what was sent while the connection was
away); a new leader of the stream (the old one may have stored an input it did not live to
republish). What it cannot tell, an input stored before its subscription reached the broker that
republishes, is covered by looking at the stream `RECHECKS_S` after subscribing (input sent before
the worker claimed the session waits 0.25 s; one stored by a loaded broker later than that is found
at a later look, then once a minute, so no input waits forever) until an input is heard, which
shows the subscription works. A worker's looks are made together (`InputLooks`): the new sessions
due for a look within a moment of each other are asked about in one JetStream request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from parley_common import subjects
from parley_common.bus import BusEvents
from parley_common.flag import Flag
from parley_common.outages import describe
from parley_common.session_contract import SessionInput, SessionInputEnvelope
from parley_common.tasks import cancel_and_wait
from parley_common.telemetry import untraced
from parley_runtime import bus

log = structlog.get_logger(__name__)
# When a new session looks at the stream for input, in seconds after it subscribed (then every
# `RECHECK_EVERY_S`), until one is heard: the first look finds input sent before the claim; the
# later ones bound how long an input not heard (stored before the subscription reached the broker
# that republishes it) can wait.
RECHECKS_S = (0.25, 1.0, 5.0, 30.0)
RECHECK_EVERY_S = 60.0
# How long a look waits for other sessions' looks to go with it (`InputLooks`): the first (input
# sent before the claim waits for it) little, the later ones (a safety net) longer; how many looks
# make one request worth a consumer (fewer: a request each, as one costs the broker less than a
# consumer then); how long the broker keeps that consumer (never read: the broker removes it).
FIRST_LOOK_WINDOW_S = 0.1
LATER_LOOK_WINDOW_S = 1.0
LOOKS_TOGETHER_MIN = 6
LOOK_CONSUMER_INACTIVE_S = 1.0


async def stored_input_after(js: JetStreamContext, conversation_id: UUID, seq: int) -> bool:
    """Whether `SESSION_IN` holds an input of this conversation beyond stream sequence `seq`."""
    try:
        msg = await js.get_last_msg(subjects.SESSION_IN_STREAM, subjects.session_in(str(conversation_id)))
    except NotFoundError:
        return False
    return (msg.seq or 0) > seq


class InputLooks:
    """One worker's looks at its new sessions' input, made together.

    A look asked for one session (`ask`) waits up to its `patience_s` for the looks of other
    sessions; when the most impatient one is due, one request answers for all of them: an
    ephemeral consumer of `SESSION_IN` filtered on their input subjects, created and never read,
    whose `num_pending` is how many inputs the stream holds for them (the broker deletes it after
    `LOOK_CONSUMER_INACTIVE_S`). Nothing pending: none has input (the common case; one request
    instead of one per session). Something pending: each is looked at on its own, as before, to
    say which. Fewer than `LOOKS_TOGETHER_MIN` due together are looked at one by one. Only sessions
    that have read no input yet ask (one that has reads what follows its last input instead). A
    request that fails answers "cannot tell" (True) for every session in it, as a
    look of its own did.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._js: JetStreamContext | None = None
        self._batch: list[tuple[UUID, asyncio.Future[bool]]] = []
        self._due: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    def ask(self, conversation_id: UUID, patience_s: float) -> asyncio.Future[bool]:
        """Whether `SESSION_IN` holds any input of this conversation, answered within `patience_s`
        (plus the request) together with the other sessions' looks. Cancelled or answered by its
        caller first (an input was heard), the answer is left alone."""
        loop = asyncio.get_running_loop()
        due = loop.time() + patience_s
        if self._due is None or due < self._due.when():
            if self._due is not None:
                self._due.cancel()
            self._due = loop.call_at(due, self._send)
        answer: asyncio.Future[bool] = loop.create_future()
        self._batch.append((conversation_id, answer))
        return answer

    def _send(self) -> None:
        batch, self._batch, self._due = self._batch, [], None
        task = asyncio.ensure_future(self._look(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _look(self, batch: list[tuple[UUID, asyncio.Future[bool]]]) -> None:
        waiting = [(conv, answer) for conv, answer in batch if not answer.done()]
        found: set[UUID] | None  # None: cannot tell
        try:
            found = await self._with_input([conv for conv, _ in waiting])
        except Exception:  # cannot tell: every session in it reads the stream
            found = None
        for conv, answer in waiting:
            if not answer.done():
                answer.set_result(found is None or conv in found)

    async def _with_input(self, conversations: list[UUID]) -> set[UUID]:
        if len(conversations) >= LOOKS_TOGETHER_MIN:
            info = await self.js.add_consumer(
                subjects.SESSION_IN_STREAM,
                ConsumerConfig(
                    filter_subjects=[subjects.session_in(str(conv)) for conv in conversations],
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.NONE,
                    num_replicas=1,
                    mem_storage=True,
                    inactive_threshold=LOOK_CONSUMER_INACTIVE_S,
                ),
            )
            if not info.num_pending:
                return set()
        found: set[UUID] = set()
        for conv in conversations:  # a few, or some of them have input: which
            try:
                if await stored_input_after(self.js, conv, 0):
                    found.add(conv)
            except Exception:  # cannot tell: read the stream
                found.add(conv)
        return found


@dataclass(frozen=True)
class Received:
    seq: int  # SESSION_IN stream sequence
    input: SessionInput | None  # None: the message was not a valid input (logged, skipped)
    headers: Mapping[str, str]


def _sequences(msg: Msg) -> tuple[int, int]:
    """A republished input's stream sequence (0: the message is not one), and the sequence of the
    input stored before it on the same subject (0: none)."""
    headers = msg.headers or {}
    try:
        return int(headers.get("Nats-Sequence", 0)), int(headers.get("Nats-Last-Sequence", 0))
    except ValueError:
        return 0, 0


class InputFeed:
    """The session's input, in stream order, from the first sequence not yet processed: each
    message read is appended to `received` and sets `arrived` (the session runner's one wake-up,
    which it shares with its turn's end). A list and a flag, not an `asyncio.Queue` (three deques
    and an event, ~3 KiB for the session's life, and a task per `get`).

    Inputs come over core NATS as the stream republishes them; one whose previous sequence is past
    the last one read says that something was missed, and what follows the last one read is then
    read from the stream (`_catch_up`). Until an input is heard, the stream is looked at
    (`_look_again`): after opening, after a reconnect, after a drop and after a new leader
    of the stream."""

    def __init__(
        self,
        nc: Client,
        events: BusEvents,
        conversation_id: UUID,
        looks: InputLooks | None = None,
        arrived: Flag | None = None,
    ) -> None:
        self.nc, self.events = nc, events
        self.conversation_id = conversation_id
        self.looks = looks if looks is not None else InputLooks(nc)  # the worker's, shared
        self.received: list[Received] = []  # read, not yet taken (`take`): a few at most
        self.arrived = arrived if arrived is not None else Flag()
        self.read_seq = 0  # the stream sequence of the last input read
        self.from_stream = 0  # how many inputs were read from the stream, not heard (a catch-up)
        self._sub: Subscription | None = None
        self._heard = False  # an input was heard since (re)subscribing: the subscription works
        self._reading: asyncio.Lock | None = None  # a catch-up under way (made at the first)
        self._looking: asyncio.Future[bool] | None = None  # a look waiting for the others'
        # The looks, until an input is heard: a loop timer while none is due (a task and its
        # coroutine were ~2 KiB more per held session), a task while one is made.
        self._since = 0.0  # when the looks began (`RECHECKS_S` count from here)
        self._looks_made = 0
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.Task[None] | None = None
        self._unhook: Callable[[], None] | None = None
        self._closed = False  # no look after `close`

    @property
    def heard(self) -> bool:
        """An input came over core NATS since the subscription was made (or the connection came
        back): the stream need not be looked at."""
        return self._heard

    async def open(self, after_seq: int, *, lazily: bool = False) -> None:
        """Read input from `after_seq + 1` on; `lazily`: a new session, whose input is all to come
        (otherwise what is stored already is read at once).

        Outside the caller's trace context: the subscription's delivery and the looks run in tasks,
        and a task keeps the context it was made in; made inside the claim's span, they would keep
        that span, ended and exported, in memory. A turn's trace comes from its input's headers,
        not from here."""
        with untraced():
            self.read_seq = after_seq
            self._sub = await bus.session_input(self.nc, self.conversation_id, self._on_stored, self._dropped)
            self._unhook = self.events.on_reconnect(self._recheck)
            self._look_again(at_once=not lazily)

    def take(self) -> Received | None:
        """The next input read (in stream order), or None."""
        return self.received.pop(0) if self.received else None

    async def _on_stored(self, msg: Msg) -> None:
        """An input the stream stored, as it republished it."""
        self._heard = True
        self._stop_timer()  # heard: no more looks
        looking = self._looking
        if looking is not None and not looking.done():
            looking.set_result(False)  # heard: no need to wait for the look
        seq, before = _sequences(msg)
        if not seq:  # not the stream's republication: nothing to read (and nothing lost)
            log.warning("session.input_unsequenced", conversation_id=str(self.conversation_id))
            return
        if seq <= self.read_seq:
            return  # read already (from the stream)
        if before > self.read_seq or (self._reading is not None and self._reading.locked()):
            await self._catch_up()  # what was missed, and this one, from the stream, in order
            if seq <= self.read_seq:
                return
        self._accept(seq, msg.data, msg.headers)

    def _accept(self, seq: int, data: bytes | None, headers: Mapping[str, str] | None) -> None:
        self.read_seq = seq
        try:
            parsed: SessionInput | None = SessionInputEnvelope.model_validate_json(data or b"").input
        except ValidationError as exc:
            log.warning(
                "session.bad_input", conversation_id=str(self.conversation_id), seq=seq, error=str(exc)
            )
            parsed = None
        self.received.append(Received(seq=seq, input=parsed, headers=dict(headers or {})))
        self.arrived.set()

    async def _catch_up(self) -> None:
        """Read what the stream holds after `read_seq`, to its end: one request per input, made
        only when something was missed or may have been. Retried while JetStream is away (the
        input waits in the stream)."""
        reading = self._reading = self._reading or asyncio.Lock()
        async with reading:
            delay = 0.05
            while True:
                try:
                    # A few at a time, as every feed looks after a reconnect.
                    async with self.events.consumer_gate:
                        while (stored := await self._stored_after(self.read_seq)) is not None:
                            self.from_stream += 1
                            self._accept(stored.seq or 0, stored.data, stored.headers)
                    return
                except Exception as exc:
                    log.warning(
                        "session.input_read_retrying",
                        conversation_id=str(self.conversation_id),
                        error=describe(exc),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _stored_after(self, seq: int) -> RawStreamMsg | None:
        try:
            return await self.looks.js.get_msg(
                subjects.SESSION_IN_STREAM, seq=seq + 1, subject=self.subject, next=True
            )
        except NotFoundError:
            return None

    @property
    def subject(self) -> str:
        return subjects.session_in(str(self.conversation_id))

    def _dropped(self) -> None:
        """The subscription dropped an input (its pending limit): look at the stream."""
        self._look_again(at_once=True)

    async def _recheck(self) -> None:
        """The connection came back, or the stream has a new leader: inputs may have been lost."""
        self._look_again(at_once=True)

    def _look_again(self, *, at_once: bool) -> None:
        """Read what the stream holds (`at_once`), then look at it `RECHECKS_S` from now, then
        every `RECHECK_EVERY_S`, until an input is heard: an input stored before the subscription
        reached the broker that republishes it (or while the connection was away) is not heard."""
        if self._closed:
            return
        self._heard = False
        self._stop_looking()
        loop = asyncio.get_running_loop()
        self._since, self._looks_made = loop.time(), 0
        if at_once:
            self._watch = loop.create_task(self._look(scheduled=False), name="input-read")
        else:
            self._schedule_look()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _stop_looking(self) -> asyncio.Task[None] | None:
        """No more looks: the timer cancelled, a look under way cancelled (and returned)."""
        self._stop_timer()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        return watch

    def _schedule_look(self) -> None:
        if self._heard or self._closed:
            return
        n, first = self._looks_made, len(RECHECKS_S)
        at = RECHECKS_S[n] if n < first else RECHECKS_S[-1] + RECHECK_EVERY_S * (n - first + 1)
        self._timer = asyncio.get_running_loop().call_at(self._since + at, self._look_due)

    def _look_due(self) -> None:
        self._timer = None
        if not self._heard:
            self._watch = asyncio.get_running_loop().create_task(self._look(), name="input-look")

    async def _look(self, *, scheduled: bool = True) -> None:
        """One look (`scheduled`: one of `RECHECKS_S`, else the read at once after opening, a
        reconnect, a drop or a new leader). A session that has read an input reads what follows
        it (one request, answered "none" as a rule); one that has read nothing asks with the others
        first (`InputLooks`): after a reconnect or a new leader every held session of the worker
        looks at once, and most have never been spoken to. Heard meanwhile: the input heard reads
        what it shows missed."""
        patience = FIRST_LOOK_WINDOW_S if self._looks_made == 0 else LATER_LOOK_WINDOW_S
        if scheduled:
            self._looks_made += 1
        if (self.read_seq or await self._stored(patience)) and not self._heard:
            await self._catch_up()
        self._looked()

    def _looked(self) -> None:
        """A look's (or a read's) task ends: the next look waits on a timer."""
        if self._watch is asyncio.current_task():
            self._watch = None
        self._schedule_look()

    async def _stored(self, patience_s: float) -> bool:
        """Whether the stream holds any input of a session that has read none, asked together."""
        try:
            self._looking = self.looks.ask(self.conversation_id, patience_s)
            return await self._looking
        except asyncio.CancelledError:
            raise
        except Exception:  # cannot tell: read the stream
            return True
        finally:
            self._looking = None

    async def close(self) -> None:
        # Before the look under way is cancelled: a read inside it may lose the cancel
        # (parley_common/tasks.py) and end as usual, and its end would schedule the next look of
        # a feed already closed, which then read the stream every `RECHECK_EVERY_S` for as long
        # as the worker ran.
        self._closed = True
        watch = self._stop_looking()
        if watch is not None:
            await cancel_and_wait(watch)
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closing: the server drops it
                await sub.unsubscribe()
