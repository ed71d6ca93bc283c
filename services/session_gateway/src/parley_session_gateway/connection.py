"""One client socket of a session, whatever its protocol: admit → resume or open → pump → finish.

`/realtime` (Kivox, realtime/connection.py) and `/chat/ws` (chat/connection.py) differ only in
their frames; this base holds everything else:

- **admit**: inside the gateway's admission gate (`GatewayContext.admitting`) the protocol's
  `_open` verifies the credential (`_admission`, `access.admit`) and resumes (`_resume`) or
  starts (`_start`) the session on the bus (`bridge.SessionBridge`). A refusal or an outage ends
  the socket the way the protocol says (`_refuse`, `_unavailable`).
- **pump**: client frames to bus input (`_receive_loop`: rate limit, then the protocol's
  `_on_message`; a `ClientFrameError` is answered with the protocol's error event and the session
  lives on), the session's output to frames (`_on_output` → `_relay`), which connection the runtime
  serves (`_on_control`: a newer one supersedes this one), and the protocol's timers.
- **finish**: a revoked credential (`LiveConnections`) ends the session (`user_exit`) after the
  protocol's closing frames and a 4401 close; a dropped socket tells the runtime, which keeps the
  session for its grace period, and the session stays resumable (`resume.touch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, ClassVar, Unpack
from uuid import UUID

import structlog
from opentelemetry import trace
from pydantic import BaseModel
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from parley_common import metrics
from parley_common.auth_contract import Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.errors import CloseCodes, Codes, ErrorCode
from parley_common.flag import Flag
from parley_common.outages import describe, is_outage
from parley_common.session_contract import (
    ClientConnected,
    ClientDisconnected,
    InputEnd,
    ServerEvent,
    ServerSessionClosed,
    SessionControl,
    SessionInput,
    SessionOutput,
)
from parley_common.tasks import cancel_and_wait
from parley_common.telemetry import current_span
from parley_common.token_bucket import TokenBucket
from parley_session_gateway.access import Admission, Refused, admit
from parley_session_gateway.bridge import SessionBridge
from parley_session_gateway.corked_ws import SEND_TEXT_NOW
from parley_session_gateway.frame_json import ClientFrameError
from parley_session_gateway.live import Live, Protocol
from parley_session_gateway.resume import Resume, touch
from parley_session_gateway.sessions import GatewayContext, StartOptions, open_session

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.session_gateway")

# A concurrent task of the connection: (name, coroutine, whether its end ends the connection).
Loop = tuple[str, Coroutine[Any, Any, None], bool]


class SessionConnection(ABC):
    protocol: ClassVar[Protocol]  # the metrics label, the `LiveConnections` kind, log and span names
    opening: ClassVar[str] = "open"  # what the logs call admission (`<protocol>.<opening>_failed`)

    def __init__(self, ctx: GatewayContext, ws: WebSocket, resume: Resume | None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.ws = ws
        self.resume = resume
        self.connection_id = uuid.uuid4().hex
        self.bridge: SessionBridge | None = None
        self.bucket = TokenBucket(self.settings.gateway_input_rate_per_s, self.settings.gateway_input_burst)
        self.principal: Principal | None = None
        self.credential = ""  # the current one, re-verified by the revocation backstop; never logged
        self.live: Live | None = None
        self.revoked: ErrorCode | None = None  # the credential was revoked: the session ends
        self.acknowledged = False  # the runtime has confirmed this connection as the live one
        self.session_closed = False
        self.superseded = False
        self._sealed = False  # the last frame is out: nothing may follow it
        self._send_lock = SendTurns()
        # corked_ws's text frame written at once (a served gateway; None in tests' fake sockets)
        extensions = getattr(ws, "scope", {}).get("extensions") or {}
        self._write_now: Callable[[str, bool], bool] | None = extensions.get(SEND_TEXT_NOW)
        # Whatever ends the connection (`_end`); nothing waits on it: `_end` stops the receive.
        self.ended = False
        self._receiving: asyncio.Task[Any] | None = None  # the socket's task, while it receives
        self._interrupted = False  # `_end` cancelled that receive (once)
        # A Flag, not an asyncio.Event: an Event kept a 760-byte deque for the socket's life (flag.py).
        self._greeted = Flag()  # the protocol's greeting is out: events may follow
        self.log = log.bind(connection_id=self.connection_id, protocol=self.protocol)

    # ----------------------------------------------------------------------------- what differs

    async def _before_admission(self) -> bool:
        """Whatever the client must send before admission (False: the socket is done)."""
        return True

    @abstractmethod
    async def _open(self) -> None:
        """Admit the caller and resume or start its session (`_resume` / `_start`), then greet."""

    @abstractmethod
    async def _refuse(self, exc: Refused) -> None:
        """Tell the client it was refused and close."""

    @abstractmethod
    async def _unavailable(self, outage: bool) -> None:
        """Tell the client the gateway could not open the session (`outage`: Redis or the bus is
        away, worth trying again shortly) and close."""

    def _loops(self) -> list[Loop]:
        """The protocol's timers, run beside the receive loop."""
        return []

    @abstractmethod
    async def _on_message(self, message: Message) -> None:
        """One client message (text or bytes) within the rate limit; may raise `ClientFrameError`."""

    @abstractmethod
    def _refusal(
        self, code: ErrorCode, params: dict[str, Any] | None = None, frame_id: str | None = None
    ) -> ClientFrameError:
        """The protocol's error for a refused client frame."""

    def _budget(self, message: Message) -> tuple[TokenBucket, float]:
        """The rate limit a client message counts against, and its rate (for the error)."""
        return self.bucket, self.settings.gateway_input_rate_per_s

    @abstractmethod
    async def _relay(self, event: ServerEvent) -> None:
        """One event of the session's output, as the protocol's frames to the socket."""

    @abstractmethod
    def _revoked_frames(self, code: ErrorCode) -> list[BaseModel]:
        """The last frames of a connection whose credential was revoked."""

    def _encode(self, frame: BaseModel) -> str:
        return frame.model_dump_json()

    # ----------------------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        await self.ws.accept()
        connections = metrics.WS_CONNECTIONS_ACTIVE.labels(self.protocol)
        connections.inc()
        try:
            if await self._admitted():
                self._upgrade_read()
                assert self.principal is not None
                self.live = self.ctx.live.add(self.protocol, self.principal, self.credential, self._revoke)
                await self._pump()
        except WebSocketDisconnect:
            pass
        finally:
            connections.dec()
            await self._finish()

    def _upgrade_read(self) -> None:
        """The upgrade's headers are read while the socket opens (its credential, origin, cookie)
        and never after; the scope kept them, ~1.3 KiB in ~27 objects, for as long as the socket
        stayed open. Emptied in place: Starlette's `headers` of the socket reads the same list."""
        headers = getattr(self.ws, "scope", {}).get("headers")
        if isinstance(headers, list):
            headers.clear()

    async def _admitted(self) -> bool:
        """True once the session is open and the client greeted."""
        if not await self._before_admission():
            return False
        try:
            async with self.ctx.admitting():
                await self._open()
        except Refused as exc:
            self.log.info(f"{self.protocol}.{self.opening}_refused", reason=exc.reason)
            await self._refuse(exc)
            return False
        except WebSocketDisconnect:
            raise
        except Exception as exc:
            outage = is_outage(exc)
            if outage:  # Redis or the bus is away: a clean refusal, no traceback
                self.log.warning(f"{self.protocol}.{self.opening}_unavailable", error=describe(exc))
            else:
                self.log.exception(f"{self.protocol}.{self.opening}_failed")
            await self._unavailable(outage)
            return False
        return True

    async def _admission(self, credential: str | None, agent_id: str) -> Admission:
        """The credential verified and the agent granted (`access.admit`); the connection then runs
        on that credential (revocation follows it)."""
        admission = await admit(
            self.ctx.auth,
            self.ctx.access,
            credential=credential,
            agent_id=agent_id,
            timeout_s=self.settings.bus_request_timeout_s,
        )
        self.principal, self.credential = admission.principal, credential or ""
        return admission

    async def _resume(self, conversation_id: UUID, last_index: int = 0) -> None:
        """Attach to a running session (output after `last_index`) and tell the runtime."""
        self.bridge = self.ctx.bridge(conversation_id, last_index)
        await self.bridge.attach(self._on_output, self._on_control)
        await self.bridge.send(self._input(ClientConnected))

    async def _start(self, admission: Admission, **start: Unpack[StartOptions]) -> None:
        """A new session with the admitted agent."""
        self.bridge = await open_session(
            self.ctx,
            admission,
            connection_id=self.connection_id,
            on_output=self._on_output,
            on_control=self._on_control,
            **start,
        )

    async def _pump(self) -> None:
        """Receive until the client, a timer or the session ends the connection, with the
        protocol's timers (chat's) beside it as tasks. The receive runs in the socket's own task:
        a task of its own, another waiting for the end and `asyncio.wait` over both kept ~2 KiB
        for as long as the socket was open (docs/performance.md, change 90)."""
        timers = [
            asyncio.create_task(self._ending(coro) if ends else coro, name=f"{self.protocol}-{name}")
            for name, coro, ends in self._loops()
        ]
        try:
            await self._receive_until_ended()
        finally:
            await cancel_and_wait(*timers)

    async def _receive_until_ended(self) -> None:
        if self.ended:
            return
        task = self._receiving = asyncio.current_task()
        try:
            await self._receive_loop()
        except asyncio.CancelledError:
            # `_end`'s cancel ends the receive; any other (the server stopping) goes on.
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise
        finally:
            self._receiving = None

    async def _ending(self, timer: Coroutine[Any, Any, None]) -> None:
        """A timer whose end ends the connection."""
        try:
            await timer
        finally:
            self._end()

    def _end(self) -> None:
        """The connection ends: the receive stops where it waits. From the socket's own task (a
        frame it handles), the receive loop sees `ended` before it waits again; from any other, its
        wait is cancelled, which reaches it only there: the socket's task waits nowhere else
        while `_receiving` is set."""
        self.ended = True
        task = self._receiving
        if task is not None and not self._interrupted and task is not asyncio.current_task():
            self._interrupted = True
            task.cancel()

    def _revoke(self, code: ErrorCode) -> None:
        """The credential was revoked (`LiveConnections`): end the session, close the socket."""
        if not (self.session_closed or self.superseded):
            self.revoked = code
            self._end()

    async def _finish(self) -> None:
        if self.live is not None:
            self.ctx.live.remove(self.live)
        bridge = self.bridge
        if self.revoked is not None:
            await self._close_revoked(self.revoked)
        if bridge is not None:
            if self.revoked is not None:
                # A revoked credential ends what it opened: the runtime closes the session
                # (`user_exit` in the transcript) instead of waiting for a reconnect.
                with contextlib.suppress(Exception):
                    await bridge.send(self._input(InputEnd, reason=ConversationEndReason.USER_EXIT))
            elif not self.session_closed and not self.superseded:
                # The socket dropped: the runtime keeps the session for its grace period.
                with contextlib.suppress(Exception):
                    await bridge.send(self._input(ClientDisconnected))
                    await touch(self.ctx.redis, bridge.conversation_id, self.settings.gateway_resume_ttl_s)
            await bridge.detach()
        await self._close(1000, "")

    async def _close_revoked(self, code: ErrorCode) -> None:
        """The protocol's last frames, then close 4401 with the code."""
        frames = self._revoked_frames(code)
        with contextlib.suppress(Exception):
            async with self._send_lock:
                self._sealed = True
                for frame in frames:
                    await self.ws.send_text(self._encode(frame))
        await self._close(CloseCodes.UNAUTHORIZED, code.code)
        self.log.info(f"{self.protocol}.credential_revoked", code=code.code)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])

    # ----------------------------------------------------------------------------- client → bus

    async def _receive_loop(self) -> None:
        while not self.ended:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                bucket, rate = self._budget(message)
                if not bucket.take():
                    raise self._refusal(Codes.REALTIME_RATE_LIMITED, {"rate": f"{rate:g}"})
                await self._on_message(message)
            except ClientFrameError as exc:
                await self._send(exc.event())

    async def _forward(
        self, item: SessionInput, attributes: dict[str, Any], client_id: str | None = None
    ) -> None:
        """Store one input durably (returns once JetStream has it); `<protocol>.input_publish_failed`
        and `service.unavailable` to the client when it could not be stored."""
        assert self.bridge is not None
        # A trace starts at each input; the runtime's turn continues it (W3C headers on the bus).
        with current_span(tracer, f"{self.protocol}.input", attributes=attributes):
            try:
                await self.bridge.send(item, client_id)
            except Exception as exc:
                self.log.warning(f"{self.protocol}.input_publish_failed", error=str(exc))
                raise self._refusal(Codes.SERVICE_UNAVAILABLE, frame_id=client_id) from exc

    def _input(self, model: type[BaseModel], **fields: Any) -> Any:
        return model(at=datetime.now(UTC), connection_id=self.connection_id, **fields)

    # ----------------------------------------------------------------------------- bus → client

    async def _on_output(self, out: SessionOutput) -> None:
        # The runtime may be faster than the greeting; it must still come first.
        if not self._greeted.is_set():
            await self._greeted.wait()
        event = out.event
        try:
            await self._relay(event)
        except Exception as exc:  # the socket is gone; the runtime's events stay in the stream
            self.log.info(f"{self.protocol}.send_failed", error=str(exc))
            self._end()
            return
        if isinstance(event, ServerSessionClosed):
            self.session_closed = True
            self._end()

    async def _on_control(self, control: SessionControl) -> None:
        """Which connection the runtime serves (a newer one supersedes this one)."""
        if control.connection_id == self.connection_id:
            self.acknowledged = True
        elif self.acknowledged and control.connection_id is not None and not self.superseded:
            # A reconnect resumed this session elsewhere: this socket is stale.
            self.log.info(f"{self.protocol}.superseded")
            self.superseded = True
            self._end()
            await self._close(CloseCodes.SUPERSEDED, "superseded by a newer connection")

    async def _send(self, frame: BaseModel) -> None:
        await self._send_text(self._encode(frame))

    async def _send_text(self, text: str) -> None:
        """One text frame as it is (already the protocol's JSON)."""
        if not self._send_text_now(text):
            async with self._send_lock:
                if not self._sealed:  # after a revocation's last frame, nothing more goes out
                    await self.ws.send_text(text)

    def _send_text_now(self, text: str, alone: bool = False) -> bool:
        """The frame written at once, without waiting (corked_ws's `SEND_TEXT_NOW`), when nothing
        else is being sent or waiting to be, so the order holds; False: send it the usual way.
        `alone`: no other frame of this loop turn joins it in one write (a tick)."""
        write_now = self._write_now
        return write_now is not None and self._send_lock.idle and not self._sealed and write_now(text, alone)


class SendTurns:
    """`async with`: a socket's sends one at a time, in order (an `asyncio.Lock`); `idle` when no
    send is under way or waiting for its turn (a released lock's next holder may not have woken
    yet, which `Lock.locked()` does not show)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._users = 0

    @property
    def idle(self) -> bool:
        return self._users == 0

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._users -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._users -= 1
