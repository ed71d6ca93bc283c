"""A session's two JetStream streams, as its owner sees them: input to read, output to write.

Output goes out as plain NATS publishes on the stream's subject (JetStream stores them in order,
and the worker does not wait for an ack per text delta; while the broker is away nats-py buffers
them and sends them, in order, once it is back); the events that end a turn are published with an
ack, which also confirms everything published before them on the connection, and are retried
through a broker outage (`publish_durably`). Those carry `Nats-Msg-Id` `<conversation>:<index>`,
so a republication after a crash (a committed tail) or a retry is dropped by JetStream itself. A
text delta carries no header at all: it is published once (a worker taking the session over numbers
after the last stored index and republishes only what of the committed tail is not stored). An
answer's last delta is held back for the turn's end (`Outlet.hold`): it is committed in the tail and
published, still plain, in the same write as the end.

Input is read with an `OrderedReader` (declared in bus.py): its consumer is recreated from the
next input as soon as the connection to a restarted broker is back. A brand-new session creates
that consumer only once it has input (`InputFeed.open(..., lazily=True)`): a consumer costs the
broker a JetStream API call at the opening (~0.3 ms of nats-server CPU, as much again in the worker)
and an idle heartbeat every 5 s for the session's life, and a session that is opened and never
spoken to needs none. Until then the worker hears the input subject over core NATS (a sign only:
the input is still read from the stream, from the first sequence the state has not processed,
so what is processed and in which order is what it was). What core NATS cannot tell is covered
by looking at the stream `RECHECKS_S` after subscribing (input sent before the worker claimed
the session waits 0.25 s; a message routed just before the subscription but stored by a loaded
broker later than that is found at a later look, then once a minute, so no first message waits
forever), and by creating the consumer at once after a reconnect (core messages sent while the
connection was away are lost). A worker's looks are made together (`InputLooks`): the sessions
due for a look within a moment of each other are asked about in one JetStream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from parley_common import subjects
from parley_common.acked_together import Publication
from parley_common.bus import BusEvents
from parley_common.flag import Flag
from parley_common.ordered_reader import OrderedReader
from parley_common.outages import describe
from parley_common.session_contract import (
    ServerEvent,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    SessionTiming,
)
from parley_common.tasks import cancel_and_wait
from parley_common.telemetry import untraced
from parley_runtime import bus

log = structlog.get_logger(__name__)
# When a new session looks at the stream for input, in seconds after it subscribed (then every
# `RECHECK_EVERY_S`): the first look finds input sent before the claim; the later ones bound how
# long an input the bell missed (routed before the subscription, stored later) can wait.
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
_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


async def stored_input_after(js: JetStreamContext, conversation_id: UUID, seq: int) -> bool:
    """Whether `SESSION_IN` holds an input of this conversation beyond stream sequence `seq`."""
    try:
        msg = await js.get_last_msg(subjects.SESSION_IN_STREAM, subjects.session_in(str(conversation_id)))
    except NotFoundError:
        return False
    return (msg.seq or 0) > seq


class InputLooks:
    """One worker's looks at its new sessions' input, made together.

    A look asked for one session (`stored`) waits up to its `patience_s` for the looks of other
    sessions; when the most impatient one is due, one request answers for all of them: an
    ephemeral consumer of `SESSION_IN` filtered on their input subjects, created and never read,
    whose `num_pending` is how many inputs the stream holds for them (the broker deletes it after
    `LOOK_CONSUMER_INACTIVE_S`). Nothing pending: none has input (the common case; one request
    instead of one per session). Something pending: each is looked at on its own, as before, to
    say which. Fewer than `LOOKS_TOGETHER_MIN` due together are looked at one by one. Only looks
    from sequence 0 (a new session's, all `InputFeed` makes) go together; another is always a look
    of its own. A request that fails answers "cannot tell" (True) for every session in it, as a
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

    async def stored(self, conversation_id: UUID, after_seq: int, patience_s: float = 0.0) -> bool:
        """Whether `SESSION_IN` holds an input of this conversation beyond `after_seq`, asked
        within `patience_s` together with the other sessions' looks."""
        if after_seq:
            return await stored_input_after(self.js, conversation_id, after_seq)
        return await self.ask(conversation_id, patience_s)

    def ask(self, conversation_id: UUID, patience_s: float) -> asyncio.Future[bool]:
        """Whether `SESSION_IN` holds any input of this conversation, answered within `patience_s`
        (plus the request) together with the other sessions' looks. Cancelled or answered by its
        caller first (the bell rang), the answer is left alone."""
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


async def last_output_index(js: JetStreamContext, conversation_id: UUID) -> int:
    """Index of the last event stored for this conversation (0 when there is none)."""
    try:
        msg = await js.get_last_msg(subjects.SESSION_OUT_STREAM, subjects.session_out(str(conversation_id)))
    except NotFoundError:
        return 0
    return SessionOutput.model_validate_json(msg.data or b"{}").index


class Outlet:
    """Numbers and publishes one session's server events.

    One event may be *held* (`hold`): numbered now, published with whatever is published next, or
    within `within_s` if nothing is. An answer's last text delta is held so that it goes out with
    the turn's end (`take_held`, then committed in the tail) in one write instead of two: a message
    on its own costs each process it crosses a wake-up and a socket read or write
    (docs/performance.md, change 44)."""

    def __init__(self, nc: Client, conversation_id: UUID, next_index: int) -> None:
        self.nc = nc
        self.conversation_id = conversation_id
        self.subject = subjects.session_out(str(conversation_id))
        self._id_prefix = f"{conversation_id}:"  # each output's `Nats-Msg-Id`, without a str(UUID)
        self.next_index = next_index
        self._held: SessionOutput | None = None
        self._held_timer: asyncio.TimerHandle | None = None

    def reserve(self, event: ServerEvent, timing: SessionTiming | None = None) -> SessionOutput:
        """Number an event without publishing it (a tail event, published after the commit)."""
        out = SessionOutput(index=self.next_index, event=event, timing=timing)
        self.next_index += 1
        return out

    async def emit(self, event: ServerEvent, timing: SessionTiming | None = None) -> SessionOutput:
        """Publish an event of a turn under way (text deltas, mostly), once, without headers: no
        trace context (nothing reads one from `SESSION_OUT`), and no `Nats-Msg-Id` (nothing
        publishes it again; JetStream's duplicate tracking of every delta and the gateway's header
        parsing cost ~8-10 µs a delta between them). The event that ends the turn has both
        (`acked`). A held event goes out first."""
        await self.release_held()
        out = self.reserve(event, timing)
        await self.publish(out)
        return out

    async def publish(self, out: SessionOutput) -> None:
        """A numbered event, published as `emit` publishes it."""
        await self.nc.publish(self.subject, out.model_dump_json().encode())

    async def hold(self, event: ServerEvent, within_s: float, timing: SessionTiming | None = None) -> None:
        """Number `event` now and publish it with the next publication, or after `within_s`."""
        await self.release_held()
        self._held = self.reserve(event, timing)
        self._held_timer = asyncio.get_running_loop().call_later(within_s, self._held_overdue)

    def take_held(self) -> SessionOutput | None:
        """The held event, now the caller's to publish (a turn's end commits it in its tail)."""
        held, self._held = self._held, None
        timer, self._held_timer = self._held_timer, None
        if timer is not None:
            timer.cancel()
        return held

    async def release_held(self) -> None:
        """Publish the held event, if any, as `emit` would have."""
        held = self.take_held()
        if held is not None:
            await self.publish(held)

    def _held_overdue(self) -> None:
        self._held_timer = None
        task = asyncio.ensure_future(self.release_held())
        task.add_done_callback(_ignore_failure)  # a lost plain publish: a gap, as for `emit`

    def acked(self, out: SessionOutput, headers: Mapping[str, str] | None = None) -> Publication:
        """A reserved event as a publication to be acked (`publish_durably_together`), under its
        `Nats-Msg-Id`, with the trace context given."""
        return Publication(self.subject, out.model_dump_json().encode(), self._msg_id(out), headers)

    def _msg_id(self, out: SessionOutput) -> str:
        return f"{self._id_prefix}{out.index}"


@dataclass(frozen=True)
class Received:
    seq: int  # SESSION_IN stream sequence
    input: SessionInput | None  # None: the message was not a valid input (logged, skipped)
    headers: Mapping[str, str]


class InputFeed:
    """The session's input, in stream order, from the first sequence not yet processed: each
    message read is appended to `received` and sets `arrived` (the session runner's one wake-up,
    which it shares with its turn's end). A list and a flag, not an `asyncio.Queue` (three deques
    and an event, ~3 KiB for the session's life, and a task per `get`)."""

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
        self._reader: OrderedReader | None = None
        self._bell: Subscription | None = None
        self._rung = Flag()  # input was heard, or the connection came back
        self._looking: asyncio.Future[bool] | None = None  # a look waiting for the others'
        self._waiting: asyncio.Task[None] | None = None
        self._unhook: Callable[[], None] | None = None

    @property
    def reading(self) -> bool:
        """The stream is being read (its consumer exists)."""
        return self._reader is not None

    async def open(self, after_seq: int, *, lazily: bool = False) -> None:
        """Read input from `after_seq + 1` on; `lazily`: once there is any (a new session).

        Outside the caller's trace context: nats-py runs each subscription's callbacks in a task of
        its own, and a task keeps the context it was made in for as long as it runs (the session's
        life); made inside the claim's span, the bell's, the reader's and the look's tasks would
        keep that span, ended and exported, in memory. A turn's trace comes from its input's
        headers, not from here."""
        with untraced():
            if not lazily:
                await self._read(after_seq)
                return
            self._bell = await bus.input_bell(self.nc, self.conversation_id, self._ring)
            self._unhook = self.events.on_reconnect(self._ring)
            self._waiting = asyncio.create_task(self._read_once_there_is_input(after_seq), name="input-bell")

    def take(self) -> Received | None:
        """The next input read (in stream order), or None."""
        return self.received.pop(0) if self.received else None

    async def _ring(self, _: Msg | None = None) -> None:
        """Input was heard on the bell (a message), or the connection came back (none)."""
        self._rung.set()
        looking = self._looking
        if looking is not None and not looking.done():
            looking.set_result(True)  # no need to wait for the look: read the stream now

    async def _read_once_there_is_input(self, after_seq: int) -> None:
        subscribed = asyncio.get_running_loop().time()  # the looks are timed from here
        periodic = itertools.count(RECHECKS_S[-1] + RECHECK_EVERY_S, RECHECK_EVERY_S)
        for at in itertools.chain(RECHECKS_S, periodic):
            # `asyncio.timeout`, not `wait_for`: no task made for each wait (~40 µs of CPU each).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(subscribed + at):
                    await self._rung.wait()
            patience = FIRST_LOOK_WINDOW_S if at == RECHECKS_S[0] else LATER_LOOK_WINDOW_S
            if self._rung.is_set() or await self._stored(after_seq, patience):
                break
        self._stop_listening()
        delay = 0.05
        while True:
            try:
                # A few at a time, as readers come back after a reconnect (which rings them all).
                async with self.events.consumer_gate:
                    await self._read(after_seq)
                return
            except Exception as exc:  # JetStream away or busy: the input waits in the stream
                log.warning(
                    "session.input_open_retrying",
                    conversation_id=str(self.conversation_id),
                    error=describe(exc),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _stored(self, after_seq: int, patience_s: float) -> bool:
        try:
            if after_seq:
                return await self.looks.stored(self.conversation_id, after_seq)
            self._looking = self.looks.ask(self.conversation_id, patience_s)
            return await self._looking
        except asyncio.CancelledError:
            raise
        except Exception:  # cannot tell: read the stream
            return True
        finally:
            self._looking = None

    def _stop_listening(self) -> None:
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        bell, self._bell = self._bell, None
        if bell is not None:
            task = asyncio.ensure_future(bell.unsubscribe())
            task.add_done_callback(_ignore_failure)

    async def _read(self, after_seq: int) -> None:
        conv, on_msg = self.conversation_id, self._on_msg
        reader = self._reader = bus.session_inputs(self.nc, self.events, conv, on_msg, after_seq=after_seq)
        try:
            await reader.open()
        except BaseException:
            self._reader = None
            await reader.close()
            raise

    async def _on_msg(self, msg: Msg) -> None:
        # The reader records a message's stream sequence before handing it on (no need to build
        # nats-py's `Msg.metadata`, a datetime included, again).
        seq = self._reader.last_seq if self._reader is not None else msg.metadata.sequence.stream
        try:
            parsed: SessionInput | None = SessionInputEnvelope.model_validate_json(msg.data).input
        except ValidationError as exc:
            log.warning(
                "session.bad_input", conversation_id=str(self.conversation_id), seq=seq, error=str(exc)
            )
            parsed = None
        self.received.append(Received(seq=seq, input=parsed, headers=dict(msg.headers or {})))
        self.arrived.set()

    async def close(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            await cancel_and_wait(waiting)
        self._stop_listening()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()


def _ignore_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # the connection may be closing: the server drops the subscription
