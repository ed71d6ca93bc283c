"""The simulated user's side of a session: the same bus contract the session gateway speaks.

A test run opens a real session exactly as the gateway does for a WebSocket client
(`SessionStart` on the `SESSIONS` work queue, input on `session.<id>.in`, output read from
`session.<id>.out` with an ordered consumer), so whichever runtime worker claims the session runs
the agent as for any user, tools included. It can be attached again after a crash: output is read
from the start and events at or below the last index consumed are skipped, input carries
`Nats-Msg-Id`s (JetStream drops a second publication), and `sent` tells whether an input made it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from parley_common import subjects
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import Codes
from parley_common.session_contract import (
    InputEnd,
    InputText,
    ServerError,
    ServerSessionClosed,
    ServerTextDelta,
    ServerTextFull,
    ServerTransfer,
    ServerTurnComplete,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    SessionStart,
    trace_headers,
)
from parley_runtime import bus

log = structlog.get_logger(__name__)


class TurnTimeout(Exception):
    """The agent did not finish its turn in time."""


@dataclass
class AgentTurn:
    """What the agent said in one turn (its text segments joined by new lines)."""

    text: str
    last_index: int  # index of the event that ended the turn
    closed: ConversationEndReason | None = None


@dataclass
class _Reading:
    segments: list[str] = field(default_factory=list)
    delta: list[str] = field(default_factory=list)

    def flush_delta(self) -> None:
        if self.delta:
            self.segments.append("".join(self.delta).strip())
            self.delta = []

    def text(self) -> str:
        self.flush_delta()
        return "\n".join(s for s in self.segments if s)


class BusConversation:
    def __init__(
        self, nc: Client, js: JetStreamContext, conversation_id: UUID, *, connection_id: str, after: int
    ) -> None:
        self.nc, self.js = nc, js
        self.conversation_id = conversation_id
        self.connection_id = connection_id
        self.last_index = after
        self._events: asyncio.Queue[SessionOutput] = asyncio.Queue()
        self._sub: JetStreamContext.PushSubscription | None = None

    async def attach(self) -> None:
        """Read the session's output (before starting it, so nothing is missed)."""
        conv = str(self.conversation_id)

        async def output(msg: Msg) -> None:
            try:
                out = SessionOutput.model_validate_json(msg.data)
            except ValidationError as exc:
                log.error("agent_test.bad_output", conversation_id=conv, error=str(exc))
                return
            if out.index > self.last_index:
                self.last_index = out.index
                self._events.put_nowait(out)

        self._sub = await bus.session_outputs(self.js, self.conversation_id, output)

    async def start(self, start: SessionStart) -> None:
        await self.js.publish(
            subjects.SESSION_START,
            start.model_dump_json().encode(),
            headers=trace_headers({"Nats-Msg-Id": str(start.conversation_id)}),
        )

    async def next_turn(self, timeout_s: float) -> AgentTurn:
        """The agent's next turn, up to `turn_complete` or the end of the session. A turn the
        runtime restarts after a crash (`realtime.turn_restarted`) is read again from its start."""
        deadline = time.monotonic() + timeout_s
        reading = _Reading()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TurnTimeout(f"the agent did not finish its turn within {timeout_s:g} s")
            try:
                async with asyncio.timeout(left):
                    out = await self._events.get()
            except TimeoutError as exc:
                raise TurnTimeout(f"the agent did not finish its turn within {timeout_s:g} s") from exc
            event = out.event
            if isinstance(event, ServerTextDelta):
                reading.delta.append(event.chunk)
            elif isinstance(event, ServerTextFull):
                reading.flush_delta()
                reading.segments.append(event.content.strip())
            elif isinstance(event, ServerError) and event.code == Codes.REALTIME_TURN_RESTARTED.code:
                reading = _Reading()
            elif isinstance(event, ServerTurnComplete):
                return AgentTurn(reading.text(), out.index)
            elif isinstance(event, ServerSessionClosed):
                return AgentTurn(reading.text(), out.index, closed=event.reason)
            elif isinstance(event, ServerTransfer):
                reading.flush_delta()  # the closing event follows

    async def say(self, text: str, msg_id: str) -> None:
        await self._send(InputText(text=text, at=_now(), connection_id=self.connection_id), msg_id)

    async def end(self, msg_id: str) -> None:
        await self._send(InputEnd(at=_now(), connection_id=self.connection_id), msg_id)

    async def sent(self, msg_id: str) -> bool:
        """Whether the last input of the session is the one published under `msg_id` (this client
        is the session's only writer, so an input that made it is the last one until the next)."""
        try:
            msg = await self.js.get_last_msg(
                subjects.SESSION_IN_STREAM, subjects.session_in(str(self.conversation_id))
            )
        except NotFoundError:
            return False
        return bool(msg.headers and msg.headers.get("Nats-Msg-Id") == msg_id)

    async def _send(self, item: SessionInput, msg_id: str) -> None:
        await self.js.publish(
            subjects.session_in(str(self.conversation_id)),
            SessionInputEnvelope(input=item).model_dump_json().encode(),
            headers=trace_headers({"Nats-Msg-Id": msg_id}),
        )

    async def detach(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server reaps the consumer
                log.debug("agent_test.unsubscribe_failed", error=str(exc))


def _now() -> datetime:
    return datetime.now(UTC)
