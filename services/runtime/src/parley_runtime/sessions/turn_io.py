"""The blueprint engine's I/O (`blueprint.interpreter.TurnIO`) during one turn of a session: its
events go out through the session runner's outlet, LLM answers are streamed (and spoken, in a voice
session), webhooks are called and mail is sent durably."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from parley_common import subjects
from parley_common.errors import Codes, ErrorCode, ParleyError
from parley_common.jetstream import publish_durably
from parley_common.session_contract import (
    MailRequest,
    ServerError,
    ServerEvent,
    ServerTextDelta,
    ServerTextFull,
    trace_headers,
)
from parley_common.telemetry import current_span
from parley_runtime.blueprint.interpreter import WebhookCall, WebhookResult
from parley_runtime.blueprint.webhook import call_webhook
from parley_runtime.sessions.deltas import DeltaCoalescer
from parley_runtime.sessions.state import HistoryItem

if TYPE_CHECKING:
    from parley_runtime.sessions.runner import SessionRunner, Turn

tracer = trace.get_tracer("parley.runtime")


@dataclass
class SessionTurnIO:
    """What the blueprint engine may do during one turn of the session `runner` runs."""

    runner: SessionRunner
    turn: Turn

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def emit(self, event: ServerEvent) -> None:
        await self.runner.emit(event)

    async def say(self, text: str) -> str:
        await self.runner.emit(ServerTextFull(content=text))
        voice = self.turn.voice
        if voice is None:
            return text
        # A voice session: the flow goes on once it is spoken; interrupted, the transcript keeps
        # what was spoken of it.
        kept = await voice.say(text)
        return text if kept is None else text[:kept].rstrip()

    async def error(self, code: ErrorCode, params: dict[str, Any]) -> None:
        await self.runner.error(code, params)

    async def answer(self, system: str, history: list[HistoryItem]) -> str:
        runner, turn = self.runner, self.turn
        assert runner.snapshot is not None
        parts: list[str] = []

        async def send(text: str) -> None:
            await runner.emit(ServerTextDelta(chunk=text))

        async def send_last(text: str) -> None:  # usually followed at once by the turn's end
            await runner.emit_last(ServerTextDelta(chunk=text))

        deltas = DeltaCoalescer(send, runner.deps.settings.runtime_delta_window_ms / 1000, send_last)

        # A voice session speaks the answer sentence by sentence while the LLM writes it.
        voice = turn.voice
        spoken = voice.message() if voice is not None and not voice.cancelled.is_set() else None

        async def on_text(chunk: str) -> None:
            parts.append(chunk)
            await deltas.add(chunk)
            if spoken is not None:
                spoken.push(chunk)

        stream = asyncio.create_task(
            runner.deps.llm.stream(runner.snapshot, system, history, on_text, runner.chat_reuse)
        )
        turn.llm_task = stream
        if turn.cancel_requested:
            stream.cancel()
        try:
            await stream
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                if spoken is not None:
                    spoken.task.cancel()
                raise  # the whole turn is being abandoned (end, timeout, shutdown)
            # `cancel` from the client: the answer is what was streamed so far.
        except ParleyError as exc:
            await runner.emit(ServerError(code=exc.code.code, message=exc.message))
        except Exception as exc:
            runner.log.exception("session.llm_failed")
            await runner.error(Codes.RUNTIME_LLM_FAILED, {"detail": type(exc).__name__})
        finally:
            turn.llm_task = None
            # Whatever was held back goes out: the transcript keeps exactly what the client saw.
            await deltas.close()
        text = "".join(parts)
        if spoken is not None:
            spoken.finish()
            kept = await spoken.result()  # once the last audio is out, or cancelled
            if kept is not None:
                # Interrupted: the transcript (and what the LLM remembers) is what was spoken.
                text = text[:kept].rstrip()
        return text

    async def webhook(self, call: WebhookCall) -> WebhookResult:
        settings = self.runner.deps.settings
        with current_span(tracer, "runtime.webhook", attributes={"node.id": call.node_id}):
            return await call_webhook(
                self.runner.deps.http,
                call,
                max_bytes=settings.runtime_webhook_max_response_bytes,
            )

    async def mail(self, request: MailRequest) -> None:
        deps = self.runner.deps
        await publish_durably(
            deps.nc,
            subjects.MAIL_SEND,
            request.model_dump_json().encode(),
            msg_id=str(request.mail_id),
            headers=trace_headers(),
            timeout_s=deps.settings.bus_publish_timeout_s,
        )
