"""Unit tests of the Octavus session pieces that need no bus: typed input checks, trigger plans,
and the message views (internal, UI, restore). The whole path is in tests/e2e/test_octavus_*."""

from __future__ import annotations

from typing import Any

import pytest

from parley_common.errors import ParleyError
from parley_common.octavus import AgentBundle
from parley_common.octavus import sessions as wire
from parley_common.octavus.events import ToolResult, TriggerBody
from parley_runtime.octavus import views
from parley_runtime.octavus.service import make_plan
from parley_runtime.octavus.state import MAIN, Message, Part, Pending, PendingCall, Session, ToolCallPart
from parley_runtime.octavus.values import check_input, tool_parameters


def session(**kw: Any) -> Session:
    return Session(
        id="s1", agent_id="a1", created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z", **kw
    )


def test_check_input_fills_defaults_and_names_the_problem(bundle: AgentBundle) -> None:
    trig = bundle.protocol.triggers["escalate"].input
    types = bundle.protocol.types
    assert check_input(trig, {"REASON": "x"}, types, what="input") == {"REASON": "x", "PRIORITY": 2}
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "`REASON` (string) is required"),
        ({"REASON": 1}, "must be of type string"),
        ({"REASON": "x", "PRIORITY": True}, "must be of type integer"),
        ({"REASON": "x", "OTHER": 1}, "`OTHER` is not declared"),
    ]
    for bad, words in cases:
        with pytest.raises(ParleyError) as err:
            check_input(trig, bad, types, what="input")
        assert err.value.code.code == "octavus.invalid_input" and words in err.value.message


def test_tool_parameters_are_a_json_schema(bundle: AgentBundle) -> None:
    schema = tool_parameters(bundle.protocol.tools["create-ticket"], bundle.protocol.types)
    assert schema == {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "priority": {"type": "integer"}},
        "required": ["summary", "priority"],
    }


def test_plans_new_triggers_and_both_continuation_forms(bundle: AgentBundle) -> None:
    s = session()
    plan = make_plan(
        bundle,
        s,
        TriggerBody.model_validate({"triggerName": "user-message", "input": {"USER_MESSAGE": "hi"}}),
    )
    assert plan.trigger == "user-message" and plan.results is None
    # An empty toolResults list is a new trigger (the docs' example sends one).
    body = {"triggerName": "user-message", "input": {"USER_MESSAGE": "hi"}, "toolResults": []}
    assert make_plan(bundle, s, TriggerBody.model_validate(body)).results is None
    s.pending = Pending(
        execution_id="e1", message_id="m1", trigger="user-message", trigger_input={"USER_MESSAGE": "hi"},
        block_index=1, calls=[PendingCall(id="c1", name="get-account", source="llm")],
    )  # fmt: skip
    for form in (
        {"executionId": "e1", "toolResults": [{"toolCallId": "c1", "result": 1}]},  # client
        {
            "triggerName": "user-message",
            "input": {},
            "toolResults": [{"toolCallId": "c1", "result": 1}],
        },  # server
    ):
        plan = make_plan(bundle, s, TriggerBody.model_validate(form))
        assert plan.results is not None and plan.trigger_input == {"USER_MESSAGE": "hi"}
    for bad in (
        {"executionId": "e2", "toolResults": [{"toolCallId": "c1"}]},
        {"executionId": "e1", "toolResults": [{"toolCallId": "c9"}]},
        {"triggerName": "escalate", "toolResults": [{"toolCallId": "c1"}]},
        {"executionId": "e1", "toolResults": [{"toolCallId": "c1"}, {"toolCallId": "c2"}]},
    ):
        with pytest.raises(ParleyError) as err:
            make_plan(bundle, s, TriggerBody.model_validate(bad))
        assert err.value.code.code == "octavus.no_pending_tools"


def test_views_hide_what_the_user_must_not_see_and_restore_round_trips() -> None:
    tool = ToolCallPart(id="t1", name="get-account", args={"userId": "u"}, result={"ok": True}, status="done")
    s = session(
        messages=[
            Message(
                id="m0",
                role="system",
                created_at="t",
                visible=False,
                parts=[Part(type="text", text="note", visible=False)],
            ),
            Message(id="m1", role="user", created_at="t", parts=[Part(type="text", text="hi")]),
            Message(
                id="m2",
                role="assistant",
                created_at="t",
                parts=[
                    Part(type="reasoning", text="hmm", visible=False),
                    Part(type="tool-call", tool=tool),
                    Part(
                        type="operation",
                        operation_id="o1",
                        operation_name="Saving",
                        operation_type="set-resource",
                    ),
                    Part(type="text", text="draft", thread="summary"),
                    Part(type="text", text="done"),
                ],
            ),
        ]
    )
    internal = views.state_body(s).model_dump(by_alias=True, exclude_none=True)
    assistant = internal["messages"][2]
    assert assistant["content"] == "done" and assistant["reasoning"] == "hmm"
    assert assistant["toolCalls"][0]["status"] == "available"
    assert [p["type"] for p in assistant["parts"]] == [
        "reasoning",
        "tool-call",
        "text",
        "text",
    ]  # no operation
    ui = views.ui_messages(s)
    assert [m.id for m in ui] == ["m1", "m2"]
    assert [p.type for p in ui[1].parts] == ["tool-call", "operation", "text", "text"]  # reasoning hidden

    restored = session()
    views.restore_messages(restored, [wire.UIMessage.model_validate(m.model_dump(by_alias=True)) for m in ui])
    assert views.ui_messages(restored) == ui
    history = restored.threads[MAIN].history
    assert [(m.role, m.content) for m in history] == [
        ("user", "hi"), ("assistant", ""), ("tool", '{"ok": true}'), ("assistant", "done"),
    ]  # fmt: skip
    assert history[1].tool_calls[0].id == "t1"


def test_tool_results_shape() -> None:
    r = ToolResult.model_validate(
        {"toolCallId": "c", "toolName": "x", "result": None, "outputVariable": "V", "blockIndex": 2}
    )
    assert r.block_index == 2
