"""A session's two JetStream streams, as its owner sees them: input to read, output to write.

Output goes out as plain NATS publishes on the stream's subject (JetStream stores them in order,
and the worker does not wait for an ack per text delta); the events that end a turn are published
with an ack, which also confirms everything published before them on the connection. Each output
carries `Nats-Msg-Id` `<conversation>:<index>`, so a republication after a crash is dropped by
JetStream itself.
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
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from parley_common import subjects
from parley_common.session_contract import (
    ServerEvent,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    trace_headers,
)

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

    def __init__(self, nc: Client, js: JetStreamContext, conversation_id: UUID, next_index: int) -> None:
        self.nc, self.js = nc, js
        self.conversation_id = conversation_id
        self.subject = subjects.session_out(str(conversation_id))
        self.next_index = next_index

    def reserve(self, event: ServerEvent) -> SessionOutput:
        """Number an event without publishing it (a tail event, published after the commit)."""
        out = SessionOutput(index=self.next_index, event=event)
        self.next_index += 1
        return out

    async def emit(self, event: ServerEvent) -> SessionOutput:
        out = self.reserve(event)
        await self.nc.publish(self.subject, out.model_dump_json().encode(), headers=self._headers(out))
        return out

    async def publish_acked(self, out: SessionOutput) -> None:
        await self.js.publish(self.subject, out.model_dump_json().encode(), headers=self._headers(out))

    def _headers(self, out: SessionOutput) -> dict[str, str]:
        return trace_headers({"Nats-Msg-Id": f"{self.conversation_id}:{out.index}"})


@dataclass(frozen=True)
class Received:
    seq: int  # SESSION_IN stream sequence
    input: SessionInput | None  # None: the message was not a valid input (logged, skipped)
    headers: Mapping[str, str]


class InputFeed:
    """The session's input, in stream order, from the first sequence not yet processed."""

    def __init__(self, js: JetStreamContext, conversation_id: UUID) -> None:
        self.js = js
        self.conversation_id = conversation_id
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self._sub: JetStreamContext.PushSubscription | None = None

    async def open(self, after_seq: int) -> None:
        config = ConsumerConfig(opt_start_seq=after_seq + 1) if after_seq else ConsumerConfig()
        self._sub = await self.js.subscribe(
            subjects.session_in(str(self.conversation_id)),
            stream=subjects.SESSION_IN_STREAM,
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            config=config,
        )

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
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server reaps the consumer
                log.debug("session.input_unsubscribe_failed", error=str(exc))


def parse_event(data: bytes) -> ServerEvent:
    return _EVENT.validate_json(data)
