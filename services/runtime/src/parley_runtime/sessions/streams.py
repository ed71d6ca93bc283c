"""A session's two JetStream streams, as its owner sees them: input to read, output to write.

Output goes out as plain NATS publishes on the stream's subject (JetStream stores them in order,
and the worker does not wait for an ack per text delta; while the broker is away nats-py buffers
them and sends them, in order, once it is back); the events that end a turn are published with an
ack, which also confirms everything published before them on the connection, and are retried
through a broker outage (`publish_durably`). Those carry `Nats-Msg-Id` `<conversation>:<index>`,
so a republication after a crash (a committed tail) or a retry is dropped by JetStream itself. A
text delta is published once and never again (a worker taking the session over numbers after the
last stored index and republishes only the committed tail), so it carries no header at all.

Input is read with an `OrderedReader` (declared in bus.py): its consumer is recreated from the
next input as soon as the connection to a restarted broker is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from parley_common import subjects
from parley_common.bus import BusEvents
from parley_common.jetstream import OrderedReader, publish_durably
from parley_common.session_contract import (
    ServerEvent,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    SessionTiming,
    trace_headers,
)
from parley_runtime import bus

log = structlog.get_logger(__name__)
_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


async def last_output_index(js: JetStreamContext, conversation_id: UUID) -> int:
    """Index of the last event stored for this conversation (0 when there is none)."""
    try:
        msg = await js.get_last_msg(subjects.SESSION_OUT_STREAM, subjects.session_out(str(conversation_id)))
    except NotFoundError:
        return 0
    return SessionOutput.model_validate_json(msg.data or b"{}").index


class Outlet:
    """Numbers and publishes one session's server events."""

    def __init__(
        self, nc: Client, conversation_id: UUID, next_index: int, *, publish_timeout_s: float
    ) -> None:
        self.nc = nc
        self.conversation_id = conversation_id
        self.subject = subjects.session_out(str(conversation_id))
        self._id_prefix = f"{conversation_id}:"  # each output's `Nats-Msg-Id`, without a str(UUID)
        self.next_index = next_index
        self.publish_timeout_s = publish_timeout_s

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
        (`publish_acked`)."""
        out = self.reserve(event, timing)
        await self.nc.publish(self.subject, out.model_dump_json().encode())
        return out

    async def publish_acked(self, out: SessionOutput) -> None:
        await publish_durably(
            self.nc,
            self.subject,
            out.model_dump_json().encode(),
            msg_id=self._msg_id(out),
            headers=trace_headers(),
            timeout_s=self.publish_timeout_s,
        )

    def _msg_id(self, out: SessionOutput) -> str:
        return f"{self._id_prefix}{out.index}"


@dataclass(frozen=True)
class Received:
    seq: int  # SESSION_IN stream sequence
    input: SessionInput | None  # None: the message was not a valid input (logged, skipped)
    headers: Mapping[str, str]


class InputFeed:
    """The session's input, in stream order, from the first sequence not yet processed."""

    def __init__(self, nc: Client, events: BusEvents, conversation_id: UUID) -> None:
        self.nc, self.events = nc, events
        self.conversation_id = conversation_id
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self._reader: OrderedReader | None = None

    async def open(self, after_seq: int) -> None:
        self._reader = bus.session_inputs(
            self.nc, self.events, self.conversation_id, self._on_msg, after_seq=after_seq
        )
        await self._reader.open()

    async def _on_msg(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            parsed: SessionInput | None = SessionInputEnvelope.model_validate_json(msg.data).input
        except ValidationError as exc:
            log.warning(
                "session.bad_input", conversation_id=str(self.conversation_id), seq=seq, error=str(exc)
            )
            parsed = None
        self.queue.put_nowait(Received(seq=seq, input=parsed, headers=dict(msg.headers or {})))

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
