"""The Anthropic provider against a local fake speaking the Messages streaming API."""

from __future__ import annotations

from parley_common.errors import Codes
from parley_runtime.llm import AnthropicProvider
from parley_runtime.llm import types as t

from .fakes import (
    FakeAnthropic,
    Reply,
    anthropic_end,
    anthropic_error,
    anthropic_event,
    anthropic_message_start,
    anthropic_stream,
    anthropic_text,
    anthropic_tool_use,
    rechunk,
)
from .support import FAST, HELLO, KEY, WEATHER, drain, drain_error, text_of, tracked, weather_call_then


def provider_for(fake: FakeAnthropic, **kwargs: object) -> AnthropicProvider:
    return tracked(AnthropicProvider(api_key=KEY, base_url=fake.base_url, options=FAST, **kwargs))  # type: ignore[arg-type]


async def test_streams_text_and_sends_headers_and_body_of_the_messages_api() -> None:
    with FakeAnthropic([anthropic_text(["Hi", " there"], usage=(9, 4))], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert events == [t.TextDelta("Hi"), t.TextDelta(" there"), t.Usage(9, 4), t.Finish("stop", "end_turn")]
    (seen,) = fake.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY and seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.json == {
        "model": "fake-model",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}],
        "stream": True,
    }


async def test_a_base_url_ending_in_v1_is_accepted() -> None:
    with FakeAnthropic([anthropic_text("ok")], api_key=KEY) as fake:
        provider = tracked(AnthropicProvider(api_key=KEY, base_url=fake.root_url + "/v1/", options=FAST))
        assert text_of(await drain(provider.stream(HELLO))) == "ok"


async def test_tool_use_assembles_partial_json_split_at_awkward_bytes() -> None:
    calls = [("toolu_1", "get_weather", '{"city": "São Paulo"}'), ("toolu_2", "get_time", "{}")]
    reply = rechunk(anthropic_tool_use(calls, split=4, text="Checking."), size=9, pause=0.001)
    request = HELLO.model_copy(update={"tools": [WEATHER]})
    with FakeAnthropic([reply], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(request))
    assert events[0] == t.TextDelta("Checking.")
    assert events[1] == t.ToolCallStart("toolu_1", "get_weather")
    deltas = [e.arguments_delta for e in events if isinstance(e, t.ToolCallDelta) and e.id == "toolu_1"]
    assert "".join(deltas) == '{"city": "São Paulo"}' and len(deltas) > 1
    assert [e for e in events if isinstance(e, t.ToolCallEnd)] == [
        t.ToolCallEnd("toolu_1", "get_weather", {"city": "São Paulo"}),
        t.ToolCallEnd("toolu_2", "get_time", {}),
    ]
    assert events[-2:] == [t.Usage(30, 11), t.Finish("tool_calls", "tool_use")]
    assert fake.requests[0].json["tools"] == [
        {"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER.parameters}
    ]


async def test_thinking_streams_reasoning_with_its_signature() -> None:
    reply = anthropic_text("Four.", thinking=["2+2", "=4"], signature="EqQBCgIYAhIM")
    request = HELLO.model_copy(update={"thinking": "low", "temperature": 0.5})
    with FakeAnthropic([reply], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(request))
    assert events[:4] == [
        t.ReasoningDelta("2+2"),
        t.ReasoningDelta("=4"),
        t.ReasoningEnd("2+2=4", signature="EqQBCgIYAhIM"),
        t.TextDelta("Four."),
    ]
    body = fake.requests[0].json
    # 5,000-token budget; max_tokens raised above it; temperature dropped (the API forbids both).
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 5000}
    assert body["max_tokens"] == 5000 + 4096 and "temperature" not in body


async def test_a_small_thinking_budget_is_raised_to_the_api_minimum() -> None:
    request = HELLO.model_copy(update={"thinking": 100, "max_tokens": 2000})
    with FakeAnthropic([anthropic_text("ok")], api_key=KEY) as fake:
        await drain(provider_for(fake).stream(request))
    body = fake.requests[0].json
    assert body["thinking"]["budget_tokens"] == 1024 and body["max_tokens"] == 2000


async def test_a_conversation_maps_to_system_alternating_turns_and_tool_results() -> None:
    request = t.ChatRequest(
        model="claude-fake",
        temperature=1.7,
        messages=[
            t.ChatMessage(role="system", content="You are terse."),
            t.ChatMessage(role="user", content="Weather in Paris and Rome?"),
            t.ChatMessage(
                role="assistant",
                content="Let me check.",
                reasoning=[
                    t.ReasoningPart(text="two cities", signature="sig1"),
                    t.ReasoningPart(text="unsigned"),
                ],
                tool_calls=[
                    t.ToolCall(id="toolu_p", name="get_weather", arguments={"city": "Paris"}),
                    t.ToolCall(id="toolu_r", name="get_weather", arguments={"city": "Rome"}),
                ],
            ),
            t.ChatMessage(role="tool", tool_call_id="toolu_p", content="21C"),
            t.ChatMessage(role="tool", tool_call_id="toolu_r", content=""),
            t.ChatMessage(role="system", content="Answer in one line."),
            t.ChatMessage(role="user", content="Thanks"),
        ],
        tools=[WEATHER],
    )
    with FakeAnthropic([anthropic_text("Paris 21C.")], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(request))
    assert text_of(events) == "Paris 21C."  # the fake answers 400 to a conversation the API refuses
    body = fake.requests[0].json
    assert body["system"] == "You are terse.\n\nAnswer in one line."
    assert body["temperature"] == 1.0  # Anthropic's range is 0..1
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two cities", "signature": "sig1"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_p", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_r", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_p", "content": "21C"},
                {"type": "tool_result", "tool_use_id": "toolu_r"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


async def test_redacted_thinking_and_cached_usage() -> None:
    start = anthropic_message_start(input_tokens=5)
    start["message"]["usage"].update(cache_read_input_tokens=100, cache_creation_input_tokens=20)
    events_in = [
        start,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "redacted_thinking", "data": "opaque=="},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 1},
        *anthropic_end("max_tokens", 3),
    ]
    with FakeAnthropic([anthropic_stream(events_in)], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert events == [
        t.ReasoningEnd("", redacted="opaque=="),
        t.TextDelta("ok"),
        t.Usage(125, 3),
        t.Finish("length", "max_tokens"),
    ]


async def test_an_error_event_mid_stream_is_raised_and_not_retried() -> None:
    steps = anthropic_text(["Hel", "lo"]).steps[:4]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with FakeAnthropic(
        [Reply(steps=[*steps, anthropic_event(error)]), anthropic_text("again")], api_key=KEY
    ) as fake:
        events, err = await drain_error(provider_for(fake).stream(HELLO))
    assert text_of(events) == "Hel"
    assert err.code is Codes.LLM_UNAVAILABLE and "overloaded_error" in (err.detail or "")
    assert len(fake.requests) == 1


async def test_a_stream_without_message_stop_is_a_protocol_error() -> None:
    steps = anthropic_text("cut").steps[:-1]  # everything but message_stop, body ends cleanly
    with FakeAnthropic([Reply(steps=steps)], api_key=KEY) as fake:
        events, err = await drain_error(provider_for(fake).stream(HELLO))
    assert text_of(events) == "cut"
    assert err.code is Codes.LLM_PROTOCOL_ERROR


async def test_overloaded_529_is_retried() -> None:
    with FakeAnthropic(
        [anthropic_error(529, "overloaded_error", "Overloaded"), anthropic_text("ok")], api_key=KEY
    ) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert text_of(events) == "ok" and len(fake.requests) == 2


async def test_a_wrong_key_is_auth_failed() -> None:
    with FakeAnthropic([], api_key="another-key") as fake:
        _, err = await drain_error(provider_for(fake).stream(HELLO))
    assert err.code is Codes.LLM_AUTH_FAILED and err.upstream_status == 401


async def test_user_words_said_while_a_tool_ran_follow_its_result() -> None:
    # Voice barge-in: the user spoke before the tool result was appended. The API wants the
    # tool_result blocks first in their user turn.
    request = weather_call_then("Hurry up", call_id="toolu_w", model="claude-fake")
    with FakeAnthropic([anthropic_text("Sunny.")], api_key=KEY) as fake:
        assert text_of(await drain(provider_for(fake).stream(request))) == "Sunny."
    assert fake.requests[0].json["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_w", "content": "sunny"},
        {"type": "text", "text": "Hurry up"},
    ]
