"""Executes a blueprint graph: one call per turn, on the session state the turn works on.

A turn is either the start of the session (`start`: from the START node until the flow waits for
the user or ends) or one user input (`user_input`: the DIALOG node the flow waits on takes it, then
the flow goes on the same way). Node semantics are those documented with their data models in
`parley_common.blueprint` and in docs/realtime.md; all I/O goes through `TurnIO`, so the
interpreter holds no connection, and a turn that is abandoned (crash, `end`) leaves nothing behind
but the state the runner discards.

Each node's execution is a `runtime.node` span (`node.id`, `node.type`), current while it runs, so
what the node causes (the LLM stream, a webhook call) nests under it in the turn's trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from opentelemetry import trace

from parley_common import blueprint as bp
from parley_common.conversation_contract import ConversationEndReason, MessageRole
from parley_common.errors import Codes, ErrorCode
from parley_common.session_contract import (
    MailRequest,
    ServerEvent,
    ServerFlowComplete,
    ServerTransfer,
    stable_id,
)
from parley_common.telemetry import current_span
from parley_common.templating import TemplateError, evaluate, render
from parley_runtime.blueprint.graph import FlowError, Graph
from parley_runtime.sessions.state import HistoryItem, SessionState

tracer = trace.get_tracer("parley.runtime")


@dataclass(frozen=True)
class WebhookCall:
    node_id: str
    url: str
    method: str
    headers: dict[str, str]
    body: str | dict[str, Any] | None
    timeout_s: float


@dataclass(frozen=True)
class WebhookResult:
    ok: bool
    value: Any = None  # the JSON response, or its text
    error: str | None = None


class TurnIO(Protocol):
    """What a turn may do to the world. Implemented by `sessions/turn_io.SessionTurnIO`."""

    def now(self) -> datetime: ...

    async def emit(self, event: ServerEvent) -> None: ...

    async def say(self, text: str) -> str:
        """Send a whole message (`text_full`); the part of it the user got: all of it, unless a
        voice session was interrupted while it was being spoken."""
        ...

    async def answer(self, system: str, history: list[HistoryItem]) -> str:
        """Stream an LLM answer to the client; the text streamed (partial when cancelled)."""
        ...

    async def webhook(self, call: WebhookCall) -> WebhookResult: ...

    async def mail(self, request: MailRequest) -> None: ...

    async def error(self, code: ErrorCode, params: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a turn ended: waiting for the user (closed is None) or closing the session."""

    closed: ConversationEndReason | None = None
    summary: str | None = None


class Interpreter:
    """The blueprint engine (`engine.SessionEngine[SessionState, str | None, Outcome]`), built for one
    turn with its I/O."""

    def __init__(
        self,
        graph: Graph,
        io: TurnIO,
        *,
        system_prompt: str | None,
        secrets: dict[str, str],
        max_steps: int,
        history_limit: int,
    ) -> None:
        self.graph = graph
        self.io = io
        self.system_prompt = system_prompt or ""
        self.secrets = secrets
        self.max_steps = max_steps
        self.history_limit = history_limit
        self._step = 0

    # ----------------------------------------------------------------------------- turns

    async def turn(self, state: SessionState, given: str | None) -> Outcome:
        """One turn: the start of the flow (`given` is None) or the user's message `given`."""
        if given is None:
            return await self.start(state)
        return await self.user_input(state, given)

    async def start(self, state: SessionState) -> Outcome:
        return await self._run_from(state, self.graph.start_id)

    async def user_input(self, state: SessionState, text: str) -> Outcome:
        state.last_activity_at = self.io.now()
        state.message(MessageRole.USER, text, self.io.now())
        state.remember("user", text, self.history_limit)
        state.variables["last_user_message"] = text
        if state.phase != "waiting" or state.node_id is None:
            raise FlowError("user input arrived while the flow is not waiting for it")
        node = self.graph.node(state.node_id)
        with _node_span(node.id, node.type):
            data = self.graph.data(node)
            assert isinstance(data, bp.DialogData)
            state.node_turns += 1
            if data.save_reply_as:
                state.variables[data.save_reply_as] = text
            if data.message is None:
                await self._llm_answer(state, node.id, data)
            if not self._leave_dialog(state, node.id, data):
                return Outcome()
        state.phase = "new"
        return await self._run_from(state, self._next(state, node.id))

    # ----------------------------------------------------------------------------- flow

    async def _run_from(self, state: SessionState, node_id: str) -> Outcome:
        for _ in range(self.max_steps):
            node = self.graph.node(node_id)
            with _node_span(node.id, node.type):
                outcome, branch = await self._execute(state, node)
            if outcome is not None:
                return outcome
            node_id = self._next(state, node.id, branch)
        raise FlowError(f"more than {self.max_steps} steps without waiting for the user")

    async def _execute(
        self, state: SessionState, node: bp.BlueprintNode
    ) -> tuple[Outcome | None, str | None]:
        """One node's work: the outcome when the turn ends at this node, else the branch to leave by."""
        data = self.graph.data(node)
        self._step += 1
        if isinstance(data, bp.StartData):
            # Defaults: values given by whoever opened the session (a client token's data) win.
            for name, value in data.variables.items():
                state.variables.setdefault(name, value)
            if data.greeting:
                await self._say(state, node.id, data.greeting)
        elif isinstance(data, bp.DialogData):
            state.node_id, state.node_turns = node.id, 0
            if data.message is not None:
                await self._say(state, node.id, data.message)
            elif not data.wait_for_input:
                await self._llm_answer(state, node.id, data)
            if data.wait_for_input:
                state.phase = "waiting"
                return Outcome(), None
        elif isinstance(data, bp.EndData):
            if data.message:
                await self._say(state, node.id, data.message)
            await self.io.emit(ServerFlowComplete())
            return Outcome(closed=ConversationEndReason.FLOW_END), None
        elif isinstance(data, bp.EvalData):
            return None, "true" if await self._evaluate(state, node.id, data.expression) else "false"
        elif isinstance(data, bp.SetVarData):
            for assignment in data.assignments:
                state.variables[assignment.name] = await self._evaluate(state, node.id, assignment.value)
        elif isinstance(data, bp.WebhookData):
            return None, await self._webhook(state, node.id, data)
        elif isinstance(data, bp.EmailNotifyData):
            await self._mail(state, node.id, data)
        elif isinstance(data, bp.TransferData):
            reason = await self._render(state, node.id, data.reason)
            await self.io.emit(ServerTransfer(agent_id=data.agent_id, reason=reason))
            return Outcome(closed=ConversationEndReason.AGENT_TRANSFER, summary=reason or None), None
        elif isinstance(data, bp.TerminateData):
            if data.message:
                await self._say(state, node.id, data.message)
            return Outcome(closed=ConversationEndReason.SCRIPT_TERMINATE, summary=data.reason), None
        return None, None

    def _next(self, state: SessionState, node_id: str, branch: str | None = None) -> str:
        def holds(expression: str) -> bool:
            try:
                return bool(evaluate(expression, state.variables))
            except TemplateError:
                return False

        return self.graph.next(node_id, holds, branch)

    def _leave_dialog(self, state: SessionState, node_id: str, data: bp.DialogData) -> bool:
        if data.exit_when is None and data.max_turns is None:
            return True
        if data.max_turns is not None and state.node_turns >= data.max_turns:
            return True
        if data.exit_when is not None:
            try:
                return bool(evaluate(data.exit_when, state.variables))
            except TemplateError:
                return False
        return False

    # ----------------------------------------------------------------------------- actions

    async def _say(self, state: SessionState, node_id: str, template: str) -> None:
        text = await self._render(state, node_id, template)
        if not text:
            return
        kept = await self.io.say(text)
        if kept:
            state.message(MessageRole.ASSISTANT, kept, self.io.now())
            state.remember("assistant", kept, self.history_limit)

    async def _llm_answer(self, state: SessionState, node_id: str, data: bp.DialogData) -> None:
        parts = [self.system_prompt.strip()]
        if data.prompt:
            parts.append((await self._render(state, node_id, data.prompt)).strip())
        if state.render_directive:
            parts.append(f"Render directive: {state.render_directive}")
        text = await self.io.answer("\n\n".join(p for p in parts if p), list(state.history))
        if text:
            state.message(MessageRole.ASSISTANT, text, self.io.now())
            state.remember("assistant", text, self.history_limit)

    async def _webhook(self, state: SessionState, node_id: str, data: bp.WebhookData) -> str:
        scope = {**state.variables, "secrets": self.secrets}
        body: str | dict[str, Any] | None
        if isinstance(data.body, dict):
            body = await self._render_json(scope, node_id, data.body)
        elif isinstance(data.body, str):
            body = await self._render(state, node_id, data.body, scope)
        else:
            body = None
        call = WebhookCall(
            node_id=node_id,
            url=await self._render(state, node_id, data.url, scope),
            method=data.method,
            headers={k: await self._render(state, node_id, v, scope) for k, v in data.headers.items()},
            body=body,
            timeout_s=data.timeout_s,
        )
        result = await self.io.webhook(call)
        if data.save_as:
            state.variables[data.save_as] = result.value
        if not result.ok and not self.graph.has_branch(node_id, "error"):
            await self.io.error(Codes.RUNTIME_WEBHOOK_FAILED, {"node_id": node_id, "detail": result.error})
        return "success" if result.ok else "error"

    async def _mail(self, state: SessionState, node_id: str, data: bp.EmailNotifyData) -> None:
        request = MailRequest(
            # Same turn, same step: the same id after a crash, so the outbox sends it once.
            mail_id=stable_id(state.conversation_id, f"mail:{state.turn_no}:{self._step}:{node_id}"),
            to=await self._render(state, node_id, data.to) or "invalid",
            subject=await self._render(state, node_id, data.subject),
            body=await self._render(state, node_id, data.body),
            conversation_id=state.conversation_id,
            agent_id=state.agent_id,
        )
        await self.io.mail(request)

    # ----------------------------------------------------------------------------- sandbox

    async def _render(
        self, state: SessionState, node_id: str, template: str, scope: dict[str, Any] | None = None
    ) -> str:
        try:
            return render(template, scope if scope is not None else state.variables)
        except TemplateError as exc:
            await self.io.error(Codes.RUNTIME_EXPRESSION_FAILED, {"node_id": node_id, "detail": str(exc)})
            return ""

    async def _render_json(self, scope: dict[str, Any], node_id: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return render(value, scope)
            except TemplateError as exc:
                detail = str(exc)
                await self.io.error(Codes.RUNTIME_EXPRESSION_FAILED, {"node_id": node_id, "detail": detail})
                return ""
        if isinstance(value, dict):
            return {k: await self._render_json(scope, node_id, v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self._render_json(scope, node_id, v) for v in value]
        return value

    async def _evaluate(self, state: SessionState, node_id: str, expression: str) -> Any:
        try:
            value = evaluate(expression, state.variables)
            json.dumps(value)  # variables must stay JSON (they live in Redis)
        except (TemplateError, TypeError, ValueError) as exc:
            await self.io.error(Codes.RUNTIME_EXPRESSION_FAILED, {"node_id": node_id, "detail": str(exc)})
            return None
        return value


def _node_span(node_id: str, node_type: str) -> current_span:
    attributes = {"node.id": node_id, "node.type": node_type}
    return current_span(tracer, "runtime.node", attributes=attributes)
