"""The Octavus `Execution`, block by block, with a scripted LLM and a list for the stream: what it
emits, what it keeps in the session, how it pauses on tools and continues with their results.
The bus around it (triggers, SSE frames) is in tests/e2e/test_octavus_sessions.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from parley_common import metrics
from parley_common.errors import Codes
from parley_common.octavus import AgentBundle
from parley_common.octavus import events as ev
from parley_runtime.llm import (
    ChatRequest,
    Finish,
    LLMError,
    LLMEvent,
    LLMRegistry,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
)
from parley_runtime.llm.registry import LLMSelection
from parley_runtime.llm_port import LLMPort
from parley_runtime.octavus.executor import Execution, Plan
from parley_runtime.octavus.state import MAIN, Session

Script = list[LLMEvent | LLMError]


class ScriptedLLM:
    """Answers each request with the next script; records the requests."""

    name = "scripted"

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        self.requests.append(request)
        for item in self.scripts.pop(0):
            if isinstance(item, LLMError):
                raise item
            yield item


class Registry(LLMRegistry):
    def __init__(self, llm: ScriptedLLM) -> None:
        super().__init__()
        self.llm = llm

    def select(
        self, *, engine: str | None = None, model: str | None = None, secrets: Mapping[str, str] | None = None
    ) -> LLMSelection:
        return LLMSelection(self.llm, "scripted", model or "")


def text(answer: str) -> Script:
    return [TextDelta(answer[:3]), TextDelta(answer[3:]), Finish("stop")]


def tool_call(call_id: str, name: str, args: dict[str, Any]) -> Script:
    return [ToolCallStart(call_id, name), ToolCallEnd(call_id, name, args), Finish("tool_calls")]


def new_session() -> Session:
    return Session(
        id="s1", agent_id="a1", created_at="t", updated_at="t", input={"COMPANY": "Acme"},
        resources={"SUMMARY": "", "LAST_TICKET": None},
    )  # fmt: skip


class Round:
    """One trigger round: the execution and what it emitted."""

    def __init__(self, bundle: AgentBundle, session: Session, llm: ScriptedLLM, plan: Plan) -> None:
        self.events: list[dict[str, Any]] = []
        self.registry = Registry(llm)
        self.execution = Execution(
            bundle=bundle, session=session, llm=LLMPort(self.registry), secrets={}, emit=self._emit, plan=plan
        )

    async def _emit(self, event: BaseModel) -> None:
        self.events.append(event.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def run(self) -> ev.FinishEvent | None:
        try:
            return await self.execution.run()
        finally:
            await self.registry.aclose()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@pytest.fixture
def session() -> Session:
    return new_session()


def message(text: str) -> Plan:
    return Plan(trigger="user-message", trigger_input={"USER_MESSAGE": text})


async def test_a_message_is_answered_and_kept(bundle: AgentBundle, session: Session) -> None:
    llm = ScriptedLLM(text("Hello there"))
    round_ = Round(bundle, session, llm, message("hi"))
    finish = await round_.run()

    assert finish is not None and finish.finish_reason == "stop"
    assert finish.execution_id == round_.execution.execution_id
    assert round_.types() == [
        "start",
        "block-start", "block-end",  # add-message (hidden)
        "block-start", "text-start", "text-delta", "text-delta", "text-end", "block-end",
    ]  # fmt: skip
    assert "".join(e["delta"] for e in round_.events if e["type"] == "text-delta") == "Hello there"
    # The request: the agent's system prompt with its input, then the user's message.
    request = llm.requests[0]
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "You are the support agent of Acme. Be brief."),
        ("user", "hi"),
    ]
    assert [t.name for t in request.tools] == ["get-account"] and request.temperature == 0.3
    history = session.threads[MAIN].history
    assert [(m.role, m.content) for m in history] == [("user", "hi"), ("assistant", "Hello there")]
    user, assistant = session.messages
    assert (user.role, user.parts[0].text, assistant.role) == ("user", "hi", "assistant")
    assert [(p.type, p.text) for p in assistant.parts] == [("text", "Hello there")]
    assert session.pending is None


async def test_an_llm_tool_call_pauses_and_its_result_continues_the_block(
    bundle: AgentBundle, session: Session
) -> None:
    llm = ScriptedLLM(tool_call("c1", "get-account", {"userId": "u1"}))
    first = Round(bundle, session, llm, message("hi"))
    finish = await first.run()

    assert finish is not None and finish.finish_reason == "tool-calls"
    shown = ["tool-input-start", "tool-input-end", "tool-input-available", "tool-request"]
    assert first.types()[-4:] == shown
    request = first.events[-1]["toolCalls"]
    assert request == [
        {"toolCallId": "c1", "toolName": "get-account", "args": {"userId": "u1"}, "source": "llm"}
    ]
    pending = session.pending
    assert pending is not None and pending.block_index == 1 and pending.steps == 1
    assert [c.id for c in pending.calls] == ["c1"]

    llm = ScriptedLLM(text("Your plan is gold"))
    results = {"c1": ev.ToolResult(tool_call_id="c1", result={"plan": "gold"})}
    second = Round(bundle, session, llm, Plan(pending.trigger, pending.trigger_input, results))
    finish = await second.run()

    assert finish is not None and finish.finish_reason == "stop"
    # The same execution and message go on: no new block-start for the open next-message block.
    assert second.events[0] == {
        "type": "start", "messageId": pending.message_id, "executionId": pending.execution_id,
    }  # fmt: skip
    assert second.types()[1:] == ["text-start", "text-delta", "text-delta", "text-end", "block-end"]
    sent = llm.requests[0].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2].tool_calls[0].id == "c1" and sent[3].content == '{"plan": "gold"}'
    history = session.threads[MAIN].history
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    tool = session.messages[-1].parts[0].tool
    assert tool is not None and (tool.status, tool.result) == ("done", {"plan": "gold"})
    assert session.pending is None


async def test_a_new_trigger_while_tools_wait_answers_them_with_an_error(
    bundle: AgentBundle, session: Session
) -> None:
    await Round(bundle, session, ScriptedLLM(tool_call("c1", "get-account", {})), message("hi")).run()
    llm = ScriptedLLM(text("Sure"))
    await Round(bundle, session, llm, message("never mind")).run()

    # The LLM history answers every call it made, so the provider accepts it.
    sent = llm.requests[0].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert "not run" in sent[3].content
    tool = session.messages[1].parts[0].tool
    assert tool is not None and tool.status == "error"


async def test_every_block_kind_runs_and_a_tool_call_block_takes_its_result(
    bundle: AgentBundle, session: Session
) -> None:
    await Round(bundle, session, ScriptedLLM(text("Hello")), message("my router is broken")).run()
    summary = ScriptedLLM(text("Router broken, wants a human."))
    plan = Plan(trigger="escalate", trigger_input={"REASON": "angry", "PRIORITY": 1})
    first = Round(bundle, session, summary, plan)
    finish = await first.run()

    assert finish is not None and finish.finish_reason == "tool-calls"
    # The summary thread got the transcript and its own system prompt; what start-thread leaves
    # unset (tools) it inherits from the agent.
    summary_request = summary.requests[0]
    notes = "You write hand-over notes for human agents, in one sentence."
    assert summary_request.messages[0].content == notes
    assert "**User**: my router is broken" in summary_request.messages[1].content
    assert [t.name for t in summary_request.tools] == ["get-account"]
    summary_text = "Router broken, wants a human."
    assert session.resources["SUMMARY"] == summary_text
    assert {"type": "resource-update", "name": "SUMMARY", "value": summary_text} in first.events
    calls = first.events[-1]["toolCalls"]
    assert calls[0]["toolName"] == "create-ticket" and calls[0]["source"] == "block"
    assert calls[0]["args"] == {"summary": summary_text, "priority": 1}
    assert calls[0]["outputVariable"] == "TICKET" and calls[0]["blockIndex"] == 6
    # The summary thread's text is not in the main thread's history.
    main = session.threads[MAIN].history
    assert main[-1].content == "The user asks for a human because: angry"

    pending = session.pending
    assert pending is not None
    llm = ScriptedLLM(text("Anything else?"))
    call_id = calls[0]["toolCallId"]
    results = {call_id: ev.ToolResult(tool_call_id=call_id, result={"ticketId": "T-7"})}
    second = Round(bundle, session, llm, Plan(pending.trigger, pending.trigger_input, results))
    finish = await second.run()

    assert finish is not None and finish.finish_reason == "stop"
    # The tool-call block ends with its result; the handler goes on after it.
    assert second.types()[:3] == ["start", "block-end", "block-start"]
    assert second.events[1]["blockId"].endswith("-6")
    assert session.variables["TICKET"] == {"ticketId": "T-7"}
    assert session.resources["LAST_TICKET"] == {"ticketId": "T-7"}
    assert llm.requests[0].messages[-1].content == "I created ticket T-7 for you."


async def test_a_provider_error_ends_the_round_with_an_error_event(
    bundle: AgentBundle, session: Session
) -> None:
    failing = LLMError(Codes.LLM_RATE_LIMITED, "scripted", retry_after=2.0, upstream_status=429)
    round_ = Round(bundle, session, ScriptedLLM([TextDelta("Hel"), failing]), message("hi"))
    counted = metrics.LLM_ERRORS.labels("scripted", "llm.rate_limited")
    before = counted._value.get()
    assert await round_.run() is None
    assert counted._value.get() == before + 1  # measured like a blueprint agent's call (LLMPort)
    error = round_.events[-1]
    assert error["type"] == "error" and error["errorType"] == "rate_limit_error"
    assert error["retryable"] is True and error["retryAfter"] == 2.0 and error["source"] == "provider"
    assert error["provider"] == {"name": "scripted", "statusCode": 429}


async def test_an_add_message_to_a_thread_never_started_fails_the_execution(bundle: AgentBundle) -> None:
    session = new_session()
    handler = bundle.protocol.handlers["escalate"]
    broken = bundle.model_copy(deep=True)
    # Drop the start-thread block: the summary thread's add-message has no thread to go to.
    broken.protocol.handlers["escalate"] = {k: v for k, v in handler.items() if k != "Start summary thread"}
    round_ = Round(broken, session, ScriptedLLM(), Plan(trigger="escalate", trigger_input={"REASON": "x"}))
    assert await round_.run() is None
    error = round_.events[-1]
    assert error["type"] == "error" and error["code"] == Codes.OCTAVUS_EXECUTION_FAILED.code
    assert "thread `summary` was not started" in error["message"]
