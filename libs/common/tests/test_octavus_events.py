"""Stream events and trigger bodies match what @octavus/core 2.0.0's zod schemas accept."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from parley_common.octavus.events import (
    SSE_DONE,
    STREAM_EVENT,
    BlockStartEvent,
    ErrorEvent,
    FinishEvent,
    StartEvent,
    ToolRequestEvent,
    TriggerBody,
    event_json,
    sse,
)

# The SSE example of the docs 0.0.5 Sessions API ("Trigger Session"), data lines only.
DOCS_STREAM = [
    '{"type":"start","messageId":"msg-123"}',
    '{"type":"block-start","blockId":"b1","blockName":"Add user message","blockType":"add-message",'
    '"display":"hidden"}',
    '{"type":"block-end","blockId":"b1"}',
    '{"type":"block-start","blockId":"b2","blockName":"Respond to user","blockType":"next-message",'
    '"display":"stream","outputToChat":true}',
    '{"type":"text-start","id":"t1"}',
    '{"type":"text-delta","id":"t1","delta":"I"}',
    '{"type":"text-end","id":"t1"}',
    '{"type":"block-end","blockId":"b2"}',
    '{"type":"finish","finishReason":"stop"}',
]


@pytest.mark.parametrize("line", DOCS_STREAM)
def test_docs_stream_events_parse_and_serialise_unchanged(line: str) -> None:
    event = STREAM_EVENT.validate_json(line)
    assert json.loads(event_json(event)) == json.loads(line)


def test_optional_keys_are_absent_not_null() -> None:
    # zod `.optional()` rejects null, so an event with None fields must omit them.
    assert sse(StartEvent(execution_id="ex1")) == 'data: {"type":"start","executionId":"ex1"}\n\n'
    block = BlockStartEvent(block_id="b", block_name="Save", block_type="set-resource", display="name")
    assert "thread" not in event_json(block) and "description" not in event_json(block)
    assert SSE_DONE == "data: [DONE]\n\n"


def test_tool_round_and_error_event() -> None:
    request = STREAM_EVENT.validate_python(
        {
            "type": "tool-request",
            "toolCalls": [
                {
                    "toolCallId": "tc1",
                    "toolName": "create-support-ticket",
                    "args": {"summary": "s"},
                    "source": "block",
                    "outputVariable": "TICKET",
                    "blockIndex": 5,
                },
            ],
        }
    )
    assert isinstance(request, ToolRequestEvent) and request.tool_calls[0].block_index == 5
    assert event_json(FinishEvent(finish_reason="tool-calls", execution_id="ex1")) == (
        '{"type":"finish","finishReason":"tool-calls","executionId":"ex1"}'
    )
    error = ErrorEvent(error_type="rate_limit_error", message="slow down", retryable=True, retry_after=30)
    assert json.loads(event_json(error)) == {
        "type": "error", "errorType": "rate_limit_error", "message": "slow down", "retryable": True,
        "source": "platform", "retryAfter": 30,
    }  # fmt: skip
    with pytest.raises(ValidationError):
        STREAM_EVENT.validate_python({"type": "finish", "finishReason": "done"})


def test_trigger_bodies_of_the_server_sdk() -> None:
    fresh = TriggerBody.model_validate({"triggerName": "user-message", "input": {"USER_MESSAGE": "hi"}})
    assert fresh.trigger_name == "user-message" and fresh.tool_results is None
    server_loop = TriggerBody.model_validate(
        {"triggerName": "user-message", "input": {}, "executionId": "ex1",
         "toolResults": [{"toolCallId": "tc1", "toolName": "get-user-account", "result": {"plan": "pro"}}]}
    )  # fmt: skip
    assert server_loop.tool_results is not None and server_loop.tool_results[0].result == {"plan": "pro"}
    client_continue = TriggerBody.model_validate(
        {"executionId": "ex1", "toolResults": [{"toolCallId": "tc2", "error": "User cancelled"}]}
    )
    assert client_continue.trigger_name is None and client_continue.execution_id == "ex1"
