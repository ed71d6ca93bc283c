"""One WebSocket connection's side of the session bus.

Output is read over core NATS from `session.<id>.out`, the subject `SESSION_OUT` stores
(`NumberedReader`): each event's `index` is handed on once, in order, after the last index the
client has seen. The stream is read only to fill what core NATS may have missed: at attach for a
resumed session (the client's `last_event` may be behind), after every reconnect to NATS, and when
an index arrives beyond the next one expected. A new session (attached before `sessions.start` is
published, so nothing can precede the subscription) makes no JetStream request at all. A fresh
session sees everything, a resumed one exactly what it missed, and a redelivered or republished
event never twice.

Input is published to `SESSION_IN` and acknowledged by JetStream before the next frame is read, so
an input the gateway accepted is never lost, even when the runtime worker dies. Each input carries a
`Nats-Msg-Id` (the chat message's `id`, or one made here) and its publication is retried under that
id while the broker is away (`publish_durably`): it is stored once, however many attempts that
took, and reported as failed only when it was not stored within `bus_publish_timeout_s`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from parley_common import session_contract as sc
from parley_common import subjects
from parley_common.bus import BusEvents
from parley_common.jetstream import publish_durably
from parley_common.numbered import NumberedReader
from parley_common.telemetry import untraced
from parley_session_gateway import bus

log = structlog.get_logger(__name__)

OnOutput = Callable[[sc.SessionOutput], Awaitable[None]]
OnControl = Callable[[sc.SessionControl], Awaitable[None]]


@dataclass
class SessionBridge:
    nc: Client
    events: BusEvents
    conversation_id: UUID
    last_index: int = 0
    _: KW_ONLY
    publish_timeout_s: float = 30.0
    _out: NumberedReader[sc.SessionOutput] | None = field(default=None, init=False, repr=False)
    _ctl: Subscription | None = field(default=None, init=False, repr=False)

    async def attach(self, on_output: OnOutput, on_control: OnControl, *, new: bool = False) -> None:
        """Subscribe to the session's control and output (after `last_index`); `new`: the session
        is not started yet, so the stream has nothing to catch up on."""
        conv = str(self.conversation_id)

        async def output(out: sc.SessionOutput) -> None:
            self.last_index = out.index
            await on_output(out)

        # nats-py runs each subscription's callbacks in a task of its own, which keeps a copy of
        # the context it was made in for the session's lifetime: made inside the handshake's span,
        # it would hold that span (ended, and exported) in memory as long as the socket stays open.
        # Nothing on the output path is traced, so its tasks start from an empty trace context.
        with untraced():
            self._ctl = await bus.session_control(self.nc, conv, on_control)
            self._out = bus.session_output(self.nc, self.events, conv, output, after=self.last_index)
            await self._out.open(catch_up=not new)

    async def start(self, start: sc.SessionStart) -> None:
        # One start per conversation, however many attempts it takes.
        await self._publish(
            subjects.SESSION_START, start.model_dump_json().encode(), msg_id=str(start.conversation_id)
        )

    async def send(
        self, item: sc.SessionInput, client_id: str | None = None, timeout_s: float | None = None
    ) -> None:
        """Store one input (returns once JetStream has it); `client_id` is the client's own id of
        the message, when its protocol has one: a resend with the same id is stored once."""
        subject = subjects.session_in(str(self.conversation_id))
        envelope = sc.input_envelope_json(item)
        await self._publish(subject, envelope, sc.input_msg_id(self.conversation_id, client_id), timeout_s)

    async def _publish(
        self, subject: str, payload: bytes, msg_id: str, timeout_s: float | None = None
    ) -> None:
        """Stored once under `msg_id`, retried while the broker is away, with the trace context."""
        await publish_durably(
            self.nc,
            subject,
            payload,
            msg_id=msg_id,
            headers=sc.trace_headers(),
            timeout_s=self.publish_timeout_s if timeout_s is None else timeout_s,
        )

    async def detach(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            await out.close()
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            try:
                await ctl.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server cleans up
                log.debug("realtime.unsubscribe_failed", error=str(exc))
