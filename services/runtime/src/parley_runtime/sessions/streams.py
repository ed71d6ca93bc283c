"""A session's two JetStream streams, as its owner sees them: input to read, output to write.

Output goes out as plain NATS publishes on the stream's subject (JetStream stores them in order,
and the worker does not wait for an ack per text delta; while the broker is away nats-py buffers
them and sends them, in order, once it is back); the events that end a turn are published with an
ack, which also confirms everything published before them on the connection, and are retried
through a broker outage (`publish_durably`). Those carry `Nats-Msg-Id` `<conversation>:<index>`,
so a republication after a crash (a committed tail) or a retry is dropped by JetStream itself, and
no other header: nothing reads a trace context from `SESSION_OUT` (a turn's trace is the input's,
continued by the runtime and the catalog). A text delta carries no header at all: it is published
once (a worker taking the session over numbers after the last stored index and republishes only
what of the committed tail is not stored). An answer's last delta is held back for the turn's end
(`Outlet.hold`): it is committed in the tail and published, still plain, in the same write as the
end.

Input is read by `inputs.InputFeed`.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter

from parley_common import subjects
from parley_common.acked_together import Publication
from parley_common.session_contract import ServerEvent, SessionOutput, SessionTiming

_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


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
        parsing cost ~8-10 µs a delta between them). The event that ends the turn has its id
        (`acked`). A held event goes out first."""
        await self.release_held()
        out = self.reserve(event, timing)
        await self.publish(out)
        return out

    async def publish(self, out: SessionOutput, data: bytes | None = None) -> None:
        """A numbered event, published as `emit` publishes it (`data`: its JSON, made already)."""
        await self.nc.publish(self.subject, _body(out, data))

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

    def acked(self, out: SessionOutput, data: bytes | None = None) -> Publication:
        """A reserved event as a publication to be acked (`publish_durably_together`), under its
        `Nats-Msg-Id` and with no other header (`data`: its JSON, made already)."""
        return Publication(self.subject, _body(out, data), self._msg_id(out))

    def _msg_id(self, out: SessionOutput) -> str:
        return f"{self._id_prefix}{out.index}"


def _body(out: SessionOutput, data: bytes | None) -> bytes:
    """An output's JSON: as the caller made it already (a commit's tail, `events_json`), or now."""
    return data if data is not None else out.model_dump_json().encode()


def _ignore_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # the connection may be closing: the server drops the subscription
