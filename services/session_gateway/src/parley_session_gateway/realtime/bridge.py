"""One WebSocket connection's side of the session bus.

Output is read from `SESSION_OUT` with an ordered consumer from the start of the conversation,
and events at or below the last index the client has seen are skipped: a fresh session sees
everything, a resumed one exactly what it missed, and a redelivered or republished event never
twice. Input is published to `SESSION_IN` and acknowledged by JetStream before the next frame is
read, so an input the gateway accepted is never lost, even when the runtime worker dies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from parley_common import subjects
from parley_common.session_contract import (
    SessionControl,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    SessionStart,
    trace_headers,
)

log = structlog.get_logger(__name__)

OnOutput = Callable[[SessionOutput], Awaitable[None]]
OnControl = Callable[[SessionControl], Awaitable[None]]


class SessionBridge:
    def __init__(self, nc: Client, js: JetStreamContext, conversation_id: UUID, last_index: int = 0) -> None:
        self.nc, self.js = nc, js
        self.conversation_id = conversation_id
        self.last_index = last_index
        self._out: JetStreamContext.PushSubscription | None = None
        self._ctl: Subscription | None = None

    async def attach(self, on_output: OnOutput, on_control: OnControl) -> None:
        conv = str(self.conversation_id)

        async def output(msg: Msg) -> None:
            try:
                out = SessionOutput.model_validate_json(msg.data)
            except ValidationError as exc:
                log.error("realtime.bad_output", conversation_id=conv, error=str(exc))
                return
            if out.index <= self.last_index:
                return
            self.last_index = out.index
            await on_output(out)

        async def control(msg: Msg) -> None:
            try:
                ctl = SessionControl.model_validate_json(msg.data)
            except ValidationError as exc:
                log.error("realtime.bad_control", conversation_id=conv, error=str(exc))
                return
            await on_control(ctl)

        self._ctl = await self.nc.subscribe(subjects.session_ctl(conv), cb=control)
        self._out = await self.js.subscribe(
            subjects.session_out(conv),
            stream=subjects.SESSION_OUT_STREAM,
            cb=output,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )

    async def start(self, start: SessionStart) -> None:
        await self.js.publish(
            subjects.SESSION_START,
            start.model_dump_json().encode(),
            # One start per conversation, even if this publish is retried.
            headers=trace_headers({"Nats-Msg-Id": str(start.conversation_id)}),
        )

    async def send(self, item: SessionInput) -> None:
        await self.js.publish(
            subjects.session_in(str(self.conversation_id)),
            SessionInputEnvelope(input=item).model_dump_json().encode(),
            headers=trace_headers(),
        )

    async def detach(self) -> None:
        for sub in (self._out, self._ctl):
            if sub is None:
                continue
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server cleans up
                log.debug("realtime.unsubscribe_failed", error=str(exc))
        self._out = self._ctl = None
