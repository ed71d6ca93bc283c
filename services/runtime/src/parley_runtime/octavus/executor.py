# One piece (574 lines): the Octavus block interpreter: every block kind reads and writes the same
# execution state, and a paused execution resumes inside any of them.
"""Runs a trigger's handler, block by block, emitting @octavus/core stream events.

An execution pauses on a `tool-request` (tools run in the caller's server or browser) and ends the
round with `finish: tool-calls`; the caller's `toolResults` continue it where it stopped: inside
the next-message block that asked (its exchange so far kept in `Pending.scratch`), or after the
tool-call block. See docs/octavus-sessions.md for what every block does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from parley_common.errors import Codes, ParleyError
from parley_common.octavus import (
    AddMessage,
    AgentBundle,
    GenerateImage,
    NextMessage,
    SerializeThread,
    SetResource,
    StartThread,
    ToolCall,
    bindings,
    render_prompt,
)
from parley_common.octavus import events as ev
from parley_common.octavus.blocks import Block
from parley_runtime.llm import ChatMessage as LLMMessage
from parley_runtime.llm import (
    ChatRequest,
    LLMError,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    TurnBuilder,
)
from parley_runtime.llm.types import ToolSpec
from parley_runtime.llm_port import LLMPort
from parley_runtime.octavus.state import (
    MAIN,
    Message,
    Part,
    Pending,
    PendingCall,
    Session,
    Thread,
    ThreadConfig,
    ToolCallPart,
)
from parley_runtime.octavus.values import json_schema, tool_parameters
from parley_runtime.octavus.views import tool_message

Emit = Callable[[BaseModel], Awaitable[None]]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExecutionFailed(Exception):
    def __init__(self, block: str, detail: str) -> None:
        super().__init__(detail)
        self.block, self.detail = block, detail


@dataclass
class Plan:
    """What a trigger request asks for, checked before the stream starts (errors are HTTP 4xx)."""

    trigger: str
    trigger_input: dict[str, Any]
    results: dict[str, ev.ToolResult] | None = None  # a continuation of `session.pending`


@dataclass
class ProtocolEngine:
    """The Octavus engine (`engine.SessionEngine[Session, Plan, FinishEvent | None]`), built for one
    round with where its events go: a turn is one `Execution` of the plan on the session."""

    bundle: AgentBundle
    llm: LLMPort
    secrets: Mapping[str, str]
    emit: Emit

    async def turn(self, state: Session, given: Plan) -> ev.FinishEvent | None:
        execution = Execution(
            bundle=self.bundle, session=state, llm=self.llm, secrets=self.secrets, emit=self.emit, plan=given
        )
        return await execution.run()


@dataclass
class Execution:
    bundle: AgentBundle
    session: Session
    llm: LLMPort
    secrets: Mapping[str, str]
    emit: Emit
    plan: Plan
    execution_id: str = ""
    message_id: str = ""
    _text_id: str | None = None
    _reasoning_id: str | None = None
    _blocks: list[tuple[str, Block]] = field(default_factory=list)

    # --- the round ---------------------------------------------------------------------------

    async def run(self) -> ev.FinishEvent | None:
        """One round: `start` and the blocks' events; returns the `finish` to send once the session
        is saved, or None when the round ended with an `error` event. Updates the session in place."""
        session, plan = self.session, self.plan
        self._blocks = list(self.bundle.protocol.handlers[plan.trigger].items())
        pending = session.pending if plan.results is not None else None
        if pending is not None:
            self.execution_id, self.message_id = pending.execution_id, pending.message_id
        else:
            if session.pending is not None:
                self._abandon(session.pending)
            self.execution_id, self.message_id = new_id("exec"), new_id("msg")
            session.variables = {n: v.default for n, v in self.bundle.protocol.variables.items()}
        session.pending = None
        await self.emit(ev.StartEvent(message_id=self.message_id, execution_id=self.execution_id))
        start = 0
        if pending is not None:
            assert plan.results is not None
            start = self._apply_results(pending, plan.results)
            if start > pending.block_index:  # a tool-call block: its results were its end
                await self.emit(ev.BlockEndEvent(block_id=f"{self.execution_id}-{pending.block_index}"))
        try:
            paused = await self._run_blocks(start, pending)
        except ExecutionFailed as exc:
            await self._error(
                Codes.OCTAVUS_EXECUTION_FAILED, "execution_error", {"block": exc.block, "detail": exc.detail}
            )
            return None
        except LLMError as exc:
            await self.emit(_provider_error(exc))
            return None
        reason = "tool-calls" if paused else "stop"
        return ev.FinishEvent(finish_reason=reason, execution_id=self.execution_id)

    async def _run_blocks(self, start: int, resume: Pending | None) -> bool:
        for index in range(start, len(self._blocks)):
            name, block = self._blocks[index]
            block_id = f"{self.execution_id}-{index}"
            thread = getattr(block, "thread", None)
            resuming = resume if (resume is not None and index == resume.block_index) else None
            if resuming is None:  # a resumed next-message is still open: its block-start was sent
                await self.emit(
                    ev.BlockStartEvent(
                        block_id=block_id,
                        block_name=name,
                        block_type=block.block,
                        display=block.effective_display,
                        description=block.description,
                        output_to_chat=(not block.independent) if isinstance(block, NextMessage) else None,
                        thread=thread if thread not in (None, MAIN) else None,
                    )
                )
            paused = await self._block(index, name, block_id, block, resuming)
            if paused:
                return True
            await self.emit(ev.BlockEndEvent(block_id=block_id))
        return False

    async def _block(
        self, index: int, name: str, block_id: str, block: Block, resume: Pending | None
    ) -> bool:
        if isinstance(block, AddMessage):
            self._add_message(name, block)
        elif isinstance(block, NextMessage):
            return await self._next_message(index, name, block, resume)
        elif isinstance(block, ToolCall):
            return await self._tool_call(index, block)
        elif isinstance(block, SetResource):
            value = self._resolve(block.value)
            self.session.resources[block.resource] = value
            await self.emit(ev.ResourceUpdateEvent(name=block.resource, value=value))
            self._operation(block_id, name, block)
        elif isinstance(block, SerializeThread):
            self.session.variables[block.output] = self._serialize(block)
            self._operation(block_id, name, block)
        elif isinstance(block, StartThread):
            self._start_thread(block)
        elif isinstance(block, GenerateImage):
            raise ExecutionFailed(
                name, "generate-image blocks need an image model; no Parley provider serves one"
            )
        return False

    async def _error(self, code: Any, error_type: ev.ErrorType, params: dict[str, Any]) -> None:
        err = ParleyError(code, params=params)
        await self.emit(
            ev.ErrorEvent(error_type=error_type, message=err.message, code=code.code, source="platform")
        )

    # --- values -------------------------------------------------------------------------------

    def scope(self) -> dict[str, Any]:
        """Every name a block may read: session input < resources < variables < trigger input."""
        s = self.session
        return {**s.input, **s.resources, **s.variables, **self.plan.trigger_input}

    def _resolve(self, value: Any) -> Any:
        """A variable reference (a name in scope) reads the variable; anything else is a literal."""
        scope = self.scope()
        if isinstance(value, str) and value in scope:
            return scope[value]
        return value

    def _values(self, items: list[tuple[str, str]]) -> dict[str, Any]:
        scope = self.scope()
        return {name: scope.get(ref) for name, ref in items}

    def _prompt(self, prompt: str, items: list[tuple[str, str]]) -> str:
        # Surrounding whitespace (the final newline of a .md file) is not part of the message.
        return render_prompt(self.bundle.prompts.get(prompt, ""), self._values(items)).strip()

    # --- messages -----------------------------------------------------------------------------

    def _assistant(self) -> Message:
        message = self.session.message(self.message_id)
        if message is None:
            message = Message(id=self.message_id, role="assistant", created_at=now_iso())
            self.session.messages.append(message)
        return message

    def _add_message(self, name: str, block: AddMessage) -> None:
        text = self._prompt(block.prompt, bindings(block.input))
        thread = block.thread or MAIN
        if thread not in self.session.threads:
            raise ExecutionFailed(name, f"thread `{thread}` was not started (use a start-thread block)")
        self.session.thread(thread).history.append(LLMMessage(role=block.role, content=text))
        if thread != MAIN:
            return
        shown = text
        if block.ui_content is not None:
            value = self.scope().get(block.ui_content)
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if block.role == "assistant":
            self._assistant().parts.append(Part(type="text", text=shown, visible=block.visible))
            return
        self.session.messages.append(
            Message(
                id=new_id("msg"),
                role=block.role,
                created_at=now_iso(),
                visible=block.visible and block.role == "user",
                parts=[Part(type="text", text=shown, visible=block.visible)],
            )
        )

    def _operation(self, block_id: str, name: str, block: Block) -> None:
        if block.effective_display == "hidden":
            return
        self._assistant().parts.append(
            Part(
                type="operation",
                operation_id=block_id,
                operation_name=block.description or name,
                operation_type=block.block,
            )
        )

    def _serialize(self, block: SerializeThread) -> str:
        history = self.session.thread(block.thread).history
        turns = [m for m in history if m.role in ("user", "assistant") and m.content]
        if block.format == "json":
            return json.dumps([{"role": m.role, "content": m.content} for m in turns], ensure_ascii=False)
        return "\n\n".join(f"**{m.role.capitalize()}**: {m.content}" for m in turns)

    def _start_thread(self, block: StartThread) -> None:
        self.session.threads[block.thread] = Thread(config=self._thread_config(block))

    def _config(self, thread: Thread) -> ThreadConfig:
        return thread.config if thread.config is not None else self._thread_config(_INHERIT_ALL)

    def _thread_config(self, block: StartThread) -> ThreadConfig:
        """A thread's LLM settings: the agent's, except what the start-thread block sets."""
        agent = self.bundle.protocol.agent
        assert agent is not None  # interactive protocols have one (checked when the session starts)
        return ThreadConfig(
            model=block.model or agent.model,
            system=block.system or agent.system,
            # Unset keys inherit; `tools: []` set on the block means "no tools".
            input=bindings(block.input if "input" in block.model_fields_set else agent.input),
            tools=block.tools if "tools" in block.model_fields_set else agent.tools,
            agentic=agent.agentic if block.agentic is None else block.agentic,
            max_steps=block.max_steps or agent.max_steps,
            temperature=agent.temperature if block.temperature is None else block.temperature,
            thinking=block.thinking or agent.thinking,
        )

    # --- tools --------------------------------------------------------------------------------

    def _title(self, tool_name: str) -> str | None:
        tool = self.bundle.protocol.tools.get(tool_name)
        if tool is None or tool.display == "name":
            return tool_name
        return tool.description

    def _display(self, tool_name: str) -> str:
        tool = self.bundle.protocol.tools.get(tool_name)
        return tool.display if tool else "description"

    async def _tool_call(self, index: int, block: ToolCall) -> bool:
        args = {key: self._resolve(value) for key, value in block.input.items()}
        call = PendingCall(
            id=new_id("call"), name=block.tool, args=args, source="block", output_variable=block.output
        )
        await self._announce_call(call.id, call.name, args)
        await self._pause(index, [call])
        return True

    async def _announce_call(self, call_id: str, tool_name: str, args: dict[str, Any]) -> None:
        hidden = self._display(tool_name) == "hidden"
        if not hidden:
            await self.emit(
                ev.ToolInputStartEvent(
                    tool_call_id=call_id, tool_name=tool_name, title=self._title(tool_name)
                )
            )
            await self.emit(ev.ToolInputEndEvent(tool_call_id=call_id))
            await self.emit(ev.ToolInputAvailableEvent(tool_call_id=call_id, tool_name=tool_name, input=args))
        self._add_tool_part(call_id, tool_name, args, visible=not hidden)

    def _add_tool_part(
        self, call_id: str, tool_name: str, args: dict[str, Any], *, visible: bool, thread: str | None = None
    ) -> None:
        tool = self.bundle.protocol.tools.get(tool_name)
        part = ToolCallPart(
            id=call_id,
            name=tool_name,
            display_name=self._title(tool_name),
            description=tool.description if tool else None,
            args=args,
        )
        self._assistant().parts.append(Part(type="tool-call", tool=part, visible=visible, thread=thread))

    async def _pause(
        self,
        index: int,
        calls: list[PendingCall],
        *,
        thread: str = MAIN,
        steps: int = 0,
        scratch: list[LLMMessage] | None = None,
    ) -> None:
        """Stop the execution at block `index` until the caller sends the calls' results."""
        pending = Pending(
            execution_id=self.execution_id,
            message_id=self.message_id,
            trigger=self.plan.trigger,
            trigger_input=self.plan.trigger_input,
            block_index=index,
            thread=thread,
            steps=steps,
            scratch=scratch or [],
            calls=calls,
        )
        self.session.pending = pending
        requested = [
            ev.PendingToolCall(
                tool_call_id=c.id,
                tool_name=c.name,
                args=c.args,
                source=c.source,
                output_variable=c.output_variable,
                block_index=index if c.source == "block" else None,
            )
            for c in pending.calls
        ]
        await self.emit(ev.ToolRequestEvent(tool_calls=requested))

    def _apply_results(self, pending: Pending, results: dict[str, ev.ToolResult]) -> int:
        """Record the caller's results; returns the block to go on from."""
        parts = {p.tool.id: p.tool for m in self.session.messages for p in m.parts if p.tool is not None}
        for call in pending.calls:
            result = results[call.id]
            part = parts.get(call.id)
            if part is not None:
                part.status = "error" if result.error is not None else "done"
                part.result, part.error = result.result, result.error
            if call.source == "block":
                if call.output_variable:
                    self.session.variables[call.output_variable] = (
                        result.result if result.error is None else None
                    )
            else:
                pending.scratch.append(tool_message(call.id, call.name, result.result, result.error))
        block_call = pending.calls[0].source == "block"
        return pending.block_index + 1 if block_call else pending.block_index

    def _abandon(self, pending: Pending) -> None:
        """A new trigger while tools were pending: those calls end as errors (the LLM history must
        still answer every tool call it made)."""
        results = {
            c.id: ev.ToolResult(tool_call_id=c.id, error="not run: the conversation moved on")
            for c in pending.calls
        }
        self._apply_results(pending, results)
        if pending.calls[0].source == "llm":
            self.session.thread(pending.thread).history.extend(pending.scratch)

    # --- next-message -------------------------------------------------------------------------

    async def _next_message(self, index: int, name: str, block: NextMessage, resume: Pending | None) -> bool:
        thread_name = block.thread or MAIN
        if thread_name != MAIN and thread_name not in self.session.threads:
            raise ExecutionFailed(name, f"thread `{thread_name}` was not started (use a start-thread block)")
        thread = self.session.thread(thread_name)
        config = self._config(thread)
        system = self._prompt(config.system, config.input)
        if block.response_type:
            schema = json_schema(block.response_type, self.bundle.protocol.types)
            system += (
                f"\n\nAnswer with a single JSON value of type {block.response_type} and nothing else. "
                f"JSON schema: {json.dumps(schema)}"
            )
        types = self.bundle.protocol.types
        tools = [
            ToolSpec(name=n, description=self.bundle.protocol.tools[n].description,
                     parameters=tool_parameters(self.bundle.protocol.tools[n], types))
            for n in config.tools if n in self.bundle.protocol.tools
        ]  # fmt: skip
        rounds = config.max_steps if config.agentic else 1
        steps = resume.steps if resume else 0
        scratch = list(resume.scratch) if resume else []
        selection = self.llm.registry.select(model=config.model, secrets=self.secrets)
        visible = not block.independent
        part_thread = None if thread_name == MAIN else thread_name
        while True:
            request = ChatRequest(
                model=selection.model,
                messages=[LLMMessage(role="system", content=system), *thread.history, *scratch],
                tools=tools if steps < rounds else [],
                temperature=config.temperature,
                thinking=config.thinking,
            )
            turn = await self._stream(self.llm.events(selection, request), block, visible, part_thread)
            scratch.append(turn)
            if not turn.tool_calls:
                break
            calls = [
                PendingCall(id=c.id, name=c.name, args=c.arguments, source="llm") for c in turn.tool_calls
            ]
            await self._pause(index, calls, thread=thread_name, steps=steps + 1, scratch=scratch)
            return True
        if not block.independent:
            thread.history.extend(scratch)
        if block.output:
            self.session.variables[block.output] = (
                _parse(turn.content) if block.response_type else turn.content
            )
        return False

    async def _stream(self, events: Any, block: NextMessage, visible: bool, thread: str | None) -> LLMMessage:
        """Relay one LLM call as stream events and record its parts; returns the assistant turn."""
        builder = TurnBuilder()
        message = self._assistant()
        text_part: Part | None = None
        reasoning_part: Part | None = None
        names: dict[str, str] = {}  # tool call id → tool name (deltas carry only the id)
        async with aclosing(events) as stream:
            async for event in stream:
                builder.add(event)
                if isinstance(event, TextDelta) and event.text:
                    if self._text_id is None:
                        self._text_id = new_id("text")
                        await self.emit(
                            ev.TextStartEvent(id=self._text_id, response_type=block.response_type)
                        )
                        text_part = Part(type="text", visible=visible, thread=thread)
                        message.parts.append(text_part)
                    assert text_part is not None
                    text_part.text += event.text
                    await self.emit(ev.TextDeltaEvent(id=self._text_id, delta=event.text))
                elif isinstance(event, ReasoningDelta) and event.text:
                    if self._reasoning_id is None:
                        self._reasoning_id = new_id("reasoning")
                        await self.emit(ev.ReasoningStartEvent(id=self._reasoning_id))
                        reasoning_part = Part(type="reasoning", visible=visible, thread=thread)
                        message.parts.append(reasoning_part)
                    assert reasoning_part is not None
                    reasoning_part.text += event.text
                    await self.emit(ev.ReasoningDeltaEvent(id=self._reasoning_id, delta=event.text))
                elif isinstance(event, ReasoningEnd):
                    if self._reasoning_id is not None:
                        await self.emit(ev.ReasoningEndEvent(id=self._reasoning_id))
                        if reasoning_part is not None:
                            reasoning_part.signature = event.signature
                    self._reasoning_id, reasoning_part = None, None
                elif isinstance(event, ToolCallStart):
                    await self._end_text()
                    text_part = None
                    names[event.id] = event.name
                    if self._display(event.name) != "hidden":
                        await self.emit(
                            ev.ToolInputStartEvent(
                                tool_call_id=event.id, tool_name=event.name, title=self._title(event.name)
                            )
                        )
                elif isinstance(event, ToolCallDelta):
                    if self._display(names.get(event.id, "")) == "stream":
                        await self.emit(
                            ev.ToolInputDeltaEvent(
                                tool_call_id=event.id, input_text_delta=event.arguments_delta
                            )
                        )
                elif isinstance(event, ToolCallEnd):
                    shown = self._display(event.name) != "hidden"
                    if shown:
                        await self.emit(ev.ToolInputEndEvent(tool_call_id=event.id))
                        await self.emit(
                            ev.ToolInputAvailableEvent(
                                tool_call_id=event.id, tool_name=event.name, input=event.arguments
                            )
                        )
                    self._add_tool_part(
                        event.id, event.name, event.arguments, visible=shown and visible, thread=thread
                    )
        await self._end_text()
        if block.response_type and text_part is not None:
            text_part.type, text_part.type_name = "object", block.response_type
            text_part.object_id = new_id("object")
            text_part.value = _parse(text_part.text)
        return builder.turn().message

    async def _end_text(self) -> None:
        if self._text_id is not None:
            await self.emit(ev.TextEndEvent(id=self._text_id))
            self._text_id = None


# The main thread's settings are the agent's: a start-thread block that sets none of its own.
_INHERIT_ALL = StartThread(block="start-thread", thread=MAIN)


def _parse(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        return json.loads(body)
    except ValueError:
        return text


_ERROR_TYPES: dict[str, tuple[ev.ErrorType, bool]] = {
    Codes.LLM_RATE_LIMITED.code: ("rate_limit_error", True),
    Codes.LLM_AUTH_FAILED.code: ("authentication_error", False),
    Codes.LLM_BAD_REQUEST.code: ("provider_error", False),
    Codes.LLM_UNAVAILABLE.code: ("provider_overloaded", True),
    Codes.LLM_TIMEOUT.code: ("provider_timeout", True),
    Codes.LLM_PROTOCOL_ERROR.code: ("provider_error", True),
}


def _provider_error(exc: LLMError) -> ev.ErrorEvent:
    error_type, retryable = _ERROR_TYPES.get(exc.code.code, ("provider_error", exc.retryable))
    return ev.ErrorEvent(
        error_type=error_type,
        message=str(exc.message),
        retryable=retryable or exc.retryable,
        source="provider",
        retry_after=exc.retry_after,
        code=exc.code.code,
        provider=ev.ProviderErrorInfo(name=exc.provider, status_code=exc.upstream_status),
    )
