# One piece (~650 lines): the exactly-once protocol below (commit a turn with its outbox and tail,
# replay them on takeover) spans the loop, the turn and the commit; split, no module shows it whole.
"""One session on its owning worker: inputs in, turns of the blueprint, events out, until it closes.

Exactly-once across a crash: a turn (the start of the flow, or one user input) runs on a copy of
the committed state and is committed in one Redis write together with the transcript events it
produced (`outbox`) and the events that end it (`tail`), which are published right after the
write. A worker that takes the session over after a crash:

1. loads the committed state and reads the index of the last event that reached
   `session.<id>.out`; if it is beyond what the state accounts for, a turn was cut short after the
   client saw part of it, so the client first gets `error` `realtime.turn_restarted`;
2. publishes the committed `outbox` and `tail` again (the outbox as the same message, its
   `Nats-Msg-Id` made from its events' ids; the catalog drops transcript events it has by
   `event_id`; tail events the stream already holds are skipped);
3. reads input again from the first one the state has not processed, so the interrupted user
   message is answered again, from the committed state, and committed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

import httpx
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace

from parley_common import metrics, subjects
from parley_common.acked_together import Publication, publish_durably_together
from parley_common.bus import BusEvents
from parley_common.catalog_contract import AgentSnapshot
from parley_common.conversation_contract import (
    ConversationEnded,
    ConversationEndReason,
    ConversationStarted,
    conversation_body,
    conversation_msg_id,
)
from parley_common.errors import Codes, ErrorCode, ErrorEnvelope, ParleyError, envelope
from parley_common.flag import Flag
from parley_common.session_contract import (
    ClientConnected,
    ClientDisconnected,
    InputAudio,
    InputCancel,
    InputEnd,
    InputText,
    ServerError,
    ServerEvent,
    ServerSessionClosed,
    ServerTurnComplete,
    SessionControl,
    SessionOutput,
    SessionStart,
    SessionTiming,
    stable_id,
    trace_context,
    trace_headers,
)
from parley_common.speech_contract import OutputFormat
from parley_common.tasks import cancel_and_wait
from parley_common.telemetry import current_span
from parley_runtime.agents import AgentCache
from parley_runtime.blueprint.graph import FlowError, Graph, Graphs
from parley_runtime.blueprint.interpreter import Interpreter, Outcome
from parley_runtime.engine import SessionEngine
from parley_runtime.llm_port import ChatReuse, LLMPort
from parley_runtime.sessions.inputs import InputFeed, InputLooks, Received
from parley_runtime.sessions.state import SessionState
from parley_runtime.sessions.store import OwnershipLost, StateStore, StateTooLarge
from parley_runtime.sessions.streams import Outlet, last_output_index
from parley_runtime.sessions.turn_io import SessionTurnIO
from parley_runtime.sessions.voice import TurnVoice
from parley_runtime.settings import RuntimeSettings

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.runtime")


class Claim(Protocol):
    """The session start message this worker holds (see worker.py)."""

    @property
    def deliveries(self) -> int: ...

    async def ack(self) -> None: ...


@dataclass
class Deps:
    settings: RuntimeSettings
    nc: Client
    js: JetStreamContext
    store: StateStore
    agents: AgentCache
    http: httpx.AsyncClient
    llm: LLMPort
    token: str  # this worker's identity in the session ownership fence
    events: BusEvents  # the NATS connection's reconnects (the input reader follows them)
    # Set while the worker drains: running turns finish, no new one starts.
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    turn_over: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a turn ends
    # The worker's looks at its new sessions' input, made together (streams.py).
    looks: InputLooks = field(init=False)
    graphs: Graphs = field(default_factory=Graphs)  # each agent's graph, made once per version

    def __post_init__(self) -> None:
        self.looks = InputLooks(self.nc)


@dataclass
class Turn:
    input_seq: int | None  # None: the start of the flow
    work: SessionState
    started: float = field(default_factory=time.perf_counter)
    task: asyncio.Task[Outcome] | None = None
    cancel_requested: bool = False
    llm_task: asyncio.Task[None] | None = None
    voice: TurnVoice | None = None  # a voice session: the turn's text is spoken too
    # The turn's trace context (its `runtime.turn` span), for its transcript's message: the loop
    # commits the turn in the session's context, and the catalog's span continues the turn's.
    trace: dict[str, str] | None = None


@dataclass
class _Timers:
    max_duration: timedelta
    max_silence: timedelta
    grace: timedelta


def _now() -> datetime:
    return datetime.now(UTC)


class SessionRunner:
    # A turn's timing (busy: no silence limit) goes out with its first output; a turn that has said
    # nothing this long after it began publishes it on the control subject instead, so the
    # gateway's ticks show it within about a tick.
    busy_timing_delay_s: ClassVar[float] = 1.0

    def __init__(self, deps: Deps, start: SessionStart, claim: Claim) -> None:
        self.deps = deps
        self.claim = claim
        self.conversation_id = start.conversation_id
        self.conv = str(start.conversation_id)  # made once (a `str(UUID)` is ~1 µs; a turn used several)
        self.log = log.bind(conversation_id=self.conv)
        self.state = SessionState.new(start)
        self.outlet: Outlet | None = None
        # What wakes the input loop: an input read, or the turn's task done (`_loop`).
        self._wake = Flag()
        self.inputs = InputFeed(deps.nc, deps.events, start.conversation_id, deps.looks, self._wake)
        self.turn: Turn | None = None
        # Input waiting for the turn under way: a list, not a deque (760 bytes even when empty).
        self.pending: list[Received] = []
        self.chat_reuse = ChatReuse()  # the history's LLM messages, from turn to turn (llm_port.py)
        self.closed = False
        # The timing the next output carries (a turn began), and the timer that publishes it on
        # the control subject should the turn say nothing for `busy_timing_delay_s`.
        self._timing: SessionTiming | None = None
        self._timing_timer: asyncio.TimerHandle | None = None
        self.snapshot: AgentSnapshot | None = None
        self.graph: Graph | None = None
        self.timers = _Timers(
            max_duration=timedelta(minutes=deps.settings.runtime_default_max_session_minutes),
            max_silence=timedelta(seconds=deps.settings.runtime_default_silence_timeout_s),
            grace=timedelta(seconds=deps.settings.runtime_reconnect_grace_s),
        )

    # ----------------------------------------------------------------------------- lifecycle

    async def run(self, headers: Mapping[str, str] | None = None) -> None:
        # The session continues the trace of its handshake (turns continue their inputs' traces).
        token = otel_context.attach(trace_context(headers))
        try:
            with current_span(tracer, "runtime.claim", attributes={"conversation.id": self.conv}):
                resumed = await self._resume()
            if resumed:
                await self._loop()
        except OwnershipLost:
            self.log.warning("session.ownership_lost")
        finally:
            await self._abandon_turn()
            if self.outlet is not None:
                with contextlib.suppress(Exception):  # stopping: as its own delta would have
                    await self.outlet.release_held()
            await self.inputs.close()
            self.deps.turn_over.set()
            otel_context.detach(token)

    async def _resume(self) -> bool:
        """Take the session over (new or after a crash); False when it is already over."""
        deps = self.deps
        claimed = await deps.store.claim(self.conversation_id, deps.token)
        claims, stored = claimed.claims, claimed.state
        if stored is not None:
            self.state = stored
        # A session no worker ever held (its start message's first delivery, its first claim, no
        # state) has published nothing yet: no need to ask SESSION_OUT for its last event.
        brand_new = stored is None and claims == 1 and self.claim.deliveries == 1
        last_out = 0 if brand_new else await last_output_index(deps.js, self.conversation_id)
        self.outlet = Outlet(
            deps.nc,
            self.conversation_id,
            max(self.state.out_index, last_out) + 1,
        )
        # At INFO when the session was held before (a takeover, a redelivery): a brand-new one is
        # the gateway's `<protocol>.session_open` line already, and a line cost ~45 µs per opening.
        (self.log.debug if brand_new else self.log.info)(
            "session.claimed", claims=claims, deliveries=self.claim.deliveries, resumed=stored is not None
        )
        # What the committed state says was published: again, idempotently.
        await self._flush(self.state, published_up_to=last_out)
        if self.state.phase == "closed":
            await self.claim.ack()
            return False
        # Taken over this often, each owner dying with it: the session itself kills workers. (Offers
        # declined while the owner lived, see worker.py, are no claims.)
        if claims > deps.settings.runtime_max_claims:
            await self._close(ConversationEndReason.ERROR, error=(Codes.RUNTIME_SESSION_FAILED, {}))
            return False
        if not await self._load_agent():
            return False
        if last_out > self.state.out_index:
            await self.error(Codes.REALTIME_TURN_RESTARTED, {})
        # A new session's input consumer is made when it has input (see streams.py).
        await self.inputs.open(self.state.last_input_seq, lazily=brand_new)
        await self._publish_timing()
        if self.state.phase == "new":
            self._begin_turn(None, None)
        return True

    async def _load_agent(self) -> bool:
        try:
            self.snapshot = await self.deps.agents.get(self.state.agent_id)
            self.graph = self.deps.graphs.of(self.snapshot.agent_id, self.snapshot.blueprint)
        except ParleyError as exc:
            await self._close(
                ConversationEndReason.ERROR, error=(Codes.RUNTIME_AGENT_UNAVAILABLE, {"detail": exc.message})
            )
            return False
        except FlowError as exc:
            await self._close(
                ConversationEndReason.ERROR, error=(Codes.RUNTIME_FLOW_BROKEN, {"detail": str(exc)})
            )
            return False
        config = self.snapshot.config
        if config.max_session_duration_minutes:
            self.timers.max_duration = timedelta(minutes=config.max_session_duration_minutes)
        if config.max_silence_timeout_seconds:
            self.timers.max_silence = timedelta(seconds=config.max_silence_timeout_seconds)
        return True

    async def _loop(self) -> None:
        """Wake for the turn's end, an input read, or the next deadline; handle the turn's end
        first, then one input. One flag (`_wake`) for the first two: no task per `get` and no
        `asyncio.wait` per wake-up (~12 µs of CPU a turn, and ~1.5 KiB a held session)."""
        wake, inputs = self._wake, self.inputs
        while not self.closed:
            task = self.turn.task if self.turn is not None else None
            if not inputs.received and (task is None or not task.done()):
                wake.clear()
                timeout = max(0.0, (self._next_deadline() - _now()).total_seconds())
                try:
                    async with asyncio.timeout(timeout):
                        await wake.wait()
                except TimeoutError:
                    if not self.closed:
                        await self._on_deadline()
                    continue
            if task is not None and task.done():  # still `self.turn`'s: only this loop ends one
                await self._finish_turn()
                self.deps.turn_over.set()
            received = inputs.take()
            if received is not None and not self.closed:
                await self._on_input(received)

    def _turn_done(self, _: asyncio.Task[Outcome]) -> None:
        self._wake.set()

    # ----------------------------------------------------------------------------- input

    async def _on_input(self, received: Received) -> None:
        item = received.input
        if isinstance(item, InputText | InputAudio) and (
            self.turn is not None or self.pending or self.deps.draining.is_set()
        ):
            # User input is taken in order, one turn at a time (a draining worker takes none: it
            # stays in SESSION_IN for the next owner).
            self.pending.append(received)
            if isinstance(item, InputText) and self._interruptible():
                self._cancel_answer()  # barge-in: the answer stops, the new message comes next
            return
        await self._handle(received)

    async def _take_pending(self) -> None:
        while self.pending and self.turn is None and not self.closed and not self.deps.draining.is_set():
            await self._handle(self.pending.pop(0))

    async def _handle(self, received: Received) -> None:
        item = received.input
        if isinstance(item, InputText):
            self._begin_turn(received.seq, item.text, received.headers)
            return
        if isinstance(item, InputEnd):
            await self._close(item.reason, input_seq=received.seq)
            return
        if isinstance(item, InputCancel):
            # Stops the LLM stream of the running turn; the turn then ends as usual with what was
            # said so far. With nothing running there is nothing to stop.
            self._cancel_answer()
        elif isinstance(item, ClientConnected):
            self.state.connection_id = item.connection_id
            self.state.disconnected_at = None
            await self._publish_timing()
        elif isinstance(item, ClientDisconnected):
            # A reconnect may already have replaced this connection; only the live one counts.
            if item.connection_id == self.state.connection_id:
                self.state.disconnected_at = item.at
        elif isinstance(item, InputAudio) and not self.state.audio_warned:
            self.state.audio_warned = True
            await self.error(Codes.REALTIME_AUDIO_UNSUPPORTED, {})
        if self.turn is None and not self.pending:
            # Processed here and now, with nothing earlier still waiting: record it. (Otherwise a
            # later commit records it, or the next owner replays it: control input is idempotent.)
            self.state.last_input_seq = received.seq
            await self.deps.store.save(self.state, self.deps.token)

    @property
    def busy(self) -> bool:
        """A turn is running (a draining worker lets it finish before handing the session over)."""
        return self.turn is not None

    def _cancel_answer(self) -> None:
        if self.turn is not None:
            self.turn.cancel_requested = True
            if self.turn.llm_task is not None:
                self.turn.llm_task.cancel()
            if self.turn.voice is not None:
                self.turn.voice.cancel()  # the synthesis stops; the transcript keeps what was spoken

    def _interruptible(self) -> bool:
        return bool(self.snapshot is not None and self.snapshot.config.allow_interruptions)

    # ----------------------------------------------------------------------------- turns

    def _begin_turn(
        self, input_seq: int | None, text: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        assert self.graph is not None and self.snapshot is not None
        # A copy the turn may change (the committed state stays as it was should the turn fail or
        # be abandoned); what the turn publishes starts empty.
        work = self.state.working_copy()
        turn = Turn(input_seq=input_seq, work=work)
        if work.voice_output is not None:
            turn.voice = self._turn_voice(work.voice_output)
        engine: SessionEngine[SessionState, str | None, Outcome] = Interpreter(
            self.graph,
            SessionTurnIO(self, turn),
            system_prompt=self.snapshot.config.global_system_prompt,
            secrets=self.snapshot.secrets,
            max_steps=self.deps.settings.runtime_max_steps_per_turn,
            history_limit=self.deps.settings.runtime_history_max_messages,
        )
        if text is None:
            work.outbox.append(
                ConversationStarted(
                    event_id=stable_id(self.conversation_id, "started"),
                    conversation_id=self.conversation_id,
                    at=work.started_at,
                    agent_id=self.snapshot.agent_id,
                    channel=work.channel,
                    user_id=work.user_id,
                )
            )
        turn.task = asyncio.create_task(
            self._traced_turn(engine.turn(work, text), headers, turn), name="turn"
        )
        turn.task.add_done_callback(self._turn_done)
        self.turn = turn
        # Busy: no silence timeout while the runtime is working (a new deadline for the ticks),
        # carried by the turn's first output (`emit`), or published if that is slow to come.
        self._take_timing()
        self._timing = self._current_timing()
        self._timing_timer = asyncio.get_running_loop().call_later(
            self.busy_timing_delay_s, self._timing_overdue, turn
        )

    def _turn_voice(self, output: OutputFormat) -> TurnVoice:
        assert self.snapshot is not None
        voice = self.snapshot.config.voice

        async def on_error(error: ErrorEnvelope) -> None:
            await self.emit(ServerError(code=error.code, message=error.message))

        return TurnVoice(
            self.deps.nc,
            self.conv,
            output,
            voice.tts if voice is not None else None,
            str(self.snapshot.agent_id),
            on_error,
            max_sentence_chars=self.deps.settings.runtime_voice_sentence_max_chars,
        )

    async def _traced_turn(
        self, body: Awaitable[Outcome], headers: Mapping[str, str] | None, turn: Turn
    ) -> Outcome:
        # The turn continues the trace of the input that caused it (gateway → bus → here → LLM);
        # the opening turn, caused by no input, stays in the session's (the handshake's) trace.
        token = otel_context.attach(trace_context(headers)) if headers is not None else None
        try:
            with current_span(
                tracer,
                "runtime.turn",
                attributes={"conversation.id": self.conv, "input.seq": turn.input_seq or 0},
            ):
                turn.trace = trace_headers()
                return await body
        finally:
            if token is not None:
                otel_context.detach(token)

    async def _finish_turn(self) -> None:
        turn = self.turn
        assert turn is not None and turn.task is not None and self.outlet is not None
        self._take_timing()  # the turn's end carries its own (or the session closes)
        try:
            outcome = turn.task.result()
        except Exception as exc:
            # A broken flow is the agent's fault (said so); anything else is ours.
            if not isinstance(exc, FlowError):
                self.log.exception("session.turn_failed")
            metrics.TURNS.labels("failed").inc()
            self.turn = None
            error = (
                (Codes.RUNTIME_FLOW_BROKEN, {"detail": str(exc)})
                if isinstance(exc, FlowError)
                else (Codes.INTERNAL, {})
            )
            await self._close(
                ConversationEndReason.ERROR,
                base=turn.work,
                input_seq=turn.input_seq,
                error=error,
                trace=turn.trace,
            )
            return
        self.turn = None
        metrics.TURNS.labels(
            "closed" if outcome.closed is not None else "cancelled" if turn.cancel_requested else "complete"
        ).inc()
        if outcome.closed is not None:
            await self._close(
                outcome.closed,
                base=turn.work,
                input_seq=turn.input_seq,
                summary=outcome.summary,
                trace=turn.trace,
            )
            return
        work = self._merge(turn.work, turn.input_seq)
        work.last_activity_at = _now()  # silence counts from the end of the runtime's turn
        # Waiting again (unless more input is pending): `turn_complete` carries the new deadline.
        work.tail = self._tail(ServerTurnComplete(), self._current_timing(work))
        work.out_index = self.outlet.next_index - 1
        if not await self._commit(work, turn.trace):
            return
        if turn.input_seq is not None:
            metrics.TURN_LATENCY.observe(time.perf_counter() - turn.started)
        await self._take_pending()

    def _tail(self, end: ServerEvent, timing: SessionTiming | None = None) -> list[SessionOutput]:
        """The events that end the turn, numbered: the answer's last text if it was held back (so
        both are committed and go out in one write), then `end`."""
        assert self.outlet is not None
        held = self.outlet.take_held()
        closing = self.outlet.reserve(end, timing)
        return [held, closing] if held is not None else [closing]

    def _merge(self, work: SessionState, input_seq: int | None) -> SessionState:
        """The turn's state, with what the input loop owns (connection, processed control input)."""
        work.turn_no = self.state.turn_no + 1
        work.connection_id = self.state.connection_id
        work.disconnected_at = self.state.disconnected_at
        work.audio_warned = self.state.audio_warned
        if input_seq is not None:
            work.last_input_seq = max(input_seq, self.state.last_input_seq)
        return work

    async def _commit(self, work: SessionState, trace: dict[str, str] | None = None) -> bool:
        try:
            await self.deps.store.save(work, self.deps.token)
        except StateTooLarge as exc:
            await self._close(
                ConversationEndReason.ERROR, error=(Codes.RUNTIME_FLOW_BROKEN, {"detail": str(exc)})
            )
            return False
        self.state = work
        await self._flush(work, trace=trace)
        return True

    async def _flush(
        self, state: SessionState, published_up_to: int = 0, trace: dict[str, str] | None = None
    ) -> None:
        """Publish what a commit produced: the events that end the turn first (the client waits
        for them), then the transcript events, as one message (the catalog orders them by `seq`;
        its id comes from theirs, so the same outbox published again is the same message). All of
        them are sent together and their acks awaited together (one round trip, not one each);
        each is stored once under its id, whatever is retried. Only the transcript carries a trace
        context (`trace`, the turn's; else the current one), which the catalog's span continues;
        nothing reads one from the outputs."""
        assert self.outlet is not None
        publications: list[Publication] = []
        outbox_json, tail_json = state.events_json()  # as the commit saved them
        for out, data in zip(state.tail, tail_json, strict=True):
            if out.index <= published_up_to:
                continue
            if out.event.type == "text_delta":  # an answer's last text, held: plain, as `emit` sends it
                await self.outlet.publish(out, data)
            else:
                publications.append(self.outlet.acked(out, data))
        if state.outbox:
            headers = trace if trace is not None else trace_headers()
            subject = subjects.conversation_event(self.conv)
            body = conversation_body(state.outbox, outbox_json)
            if len(state.outbox) == 1 or len(body) <= self.deps.nc.max_payload // 2:
                batches = [(body, state.outbox)]
            else:  # long messages that would not fit one NATS message together go one by one
                batches = [(data, [e]) for e, data in zip(state.outbox, outbox_json, strict=True)]
            publications += [
                Publication(subject, data, conversation_msg_id(events), headers) for data, events in batches
            ]
        await publish_durably_together(
            self.deps.nc, publications, timeout_s=self.deps.settings.bus_publish_timeout_s
        )
        state.published()

    async def _abandon_turn(self) -> None:
        self._take_timing()
        turn, self.turn = self.turn, None
        if turn is not None and turn.task is not None and not turn.task.done():
            metrics.TURNS.labels("abandoned").inc()
            await cancel_and_wait(turn.task)

    # ----------------------------------------------------------------------------- closing

    async def _close(
        self,
        reason: ConversationEndReason,
        *,
        base: SessionState | None = None,
        input_seq: int | None = None,
        summary: str | None = None,
        error: tuple[ErrorCode, dict[str, Any]] | None = None,
        trace: dict[str, str] | None = None,
    ) -> None:
        """End the session: the last events, `session_closed`, the transcript's end, the ack
        (`trace`: the context of the turn that ended it, for its transcript)."""
        assert self.outlet is not None
        running = self.turn
        await self._abandon_turn()
        if base is None and running is not None:
            base = running.work  # what the cut-short turn already said stays in the transcript
            input_seq = input_seq or running.input_seq
        work = self._merge(base if base is not None else self.state.model_copy(deep=True), input_seq)
        if error is not None:
            await self.error(*error)
        work.phase = "closed"
        work.end_reason = reason
        work.outbox.append(
            ConversationEnded(
                event_id=stable_id(self.conversation_id, "ended"),
                conversation_id=self.conversation_id,
                at=_now(),
                end_reason=reason,
                summary=summary,
            )
        )
        work.tail = self._tail(ServerSessionClosed(reason=reason))
        work.out_index = self.outlet.next_index - 1
        self.closed = True
        try:
            await self.deps.store.save(work, self.deps.token)
        except StateTooLarge:
            work.history.clear()
            work.variables = {}
            await self.deps.store.save(work, self.deps.token)
        self.state = work
        await self._flush(work, trace=trace)
        await self.claim.ack()
        self.log.info("session.closed", reason=reason.value)

    # ----------------------------------------------------------------------------- timing

    def _idle(self) -> bool:
        return self.turn is None and not self.pending

    def _next_deadline(self) -> datetime:
        deadline = self.state.deadline(self.timers.max_duration, self.timers.max_silence, idle=self._idle())
        if self.state.disconnected_at is not None:
            deadline = min(deadline, self.state.disconnected_at + self.timers.grace)
        return deadline

    async def _on_deadline(self) -> None:
        now = _now()
        if self.state.disconnected_at is not None and now >= self.state.disconnected_at + self.timers.grace:
            await self._close(ConversationEndReason.SOCKET_SHUTDOWN)
        elif now >= self.state.deadline(self.timers.max_duration, self.timers.max_silence, idle=self._idle()):
            await self._close(ConversationEndReason.TIMEOUT)

    def _current_timing(self, state: SessionState | None = None) -> SessionTiming:
        state = state if state is not None else self.state
        return SessionTiming(
            started_at=state.started_at,
            deadline_at=state.deadline(self.timers.max_duration, self.timers.max_silence, idle=self._idle()),
        )

    async def _publish_timing(self) -> None:
        """The timing and the live connection on the control subject (a claim, a client that
        (re)connected, a turn slow to say anything), as of the last output index numbered."""
        assert self.outlet is not None
        self._take_timing()
        timing = self._current_timing()
        control = SessionControl(
            started_at=timing.started_at,
            deadline_at=timing.deadline_at,
            connection_id=self.state.connection_id,
            index=self.outlet.next_index - 1,
        )
        await self.deps.nc.publish(subjects.session_ctl(self.conv), control.model_dump_json().encode())

    def _timing_overdue(self, turn: Turn) -> None:
        self._timing_timer = None
        if self._timing is not None and self.turn is turn and not self.closed:
            task = asyncio.ensure_future(self._publish_timing())
            task.add_done_callback(_log_failure)

    def _take_timing(self) -> SessionTiming | None:
        """The timing waiting for the turn's first output, if any, taken: neither that output nor
        the timer will send it again."""
        timing, self._timing = self._timing, None
        timer, self._timing_timer = self._timing_timer, None
        if timer is not None:
            timer.cancel()
        return timing

    # ----------------------------------------------------------------------------- output

    async def emit(self, event: ServerEvent) -> None:
        assert self.outlet is not None
        await self.outlet.emit(event, self._take_timing())

    async def emit_last(self, event: ServerEvent) -> None:
        """`emit`, for the last event of an answer: held (`Outlet.hold`) for at most a delta window,
        so that a turn ending with it publishes both in one write."""
        assert self.outlet is not None
        window = self.deps.settings.runtime_delta_window_ms / 1000
        await self.outlet.hold(event, window, self._take_timing())

    async def error(self, code: ErrorCode, params: dict[str, Any]) -> None:
        await self.emit(ServerError(code=code.code, message=envelope(code, params=params).message))


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("session.background_failed", error=str(task.exception()))
