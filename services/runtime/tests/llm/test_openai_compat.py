"""The OpenAI-compatible provider against a local fake speaking Chat Completions SSE."""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import Any

import pytest

from parley_common.errors import Codes
from parley_runtime.llm import OpenAICompatProvider, OpenAIDialect
from parley_runtime.llm import types as t
from parley_runtime.llm.engines import ENGINES

from .fakes import (
    FakeOpenAI,
    Reply,
    json_reply,
    openai_chunk,
    openai_stream,
    openai_text,
    openai_tool_calls,
    rechunk,
    sse_data,
)
from .support import FAST, HELLO, KEY, WEATHER, drain, drain_error, text_of, tracked, weather_call_then


def provider_for(
    fake: FakeOpenAI, dialect: OpenAIDialect | None = None, name: str = "openai"
) -> OpenAICompatProvider:
    return tracked(
        OpenAICompatProvider(name=name, base_url=fake.base_url, api_key=KEY, dialect=dialect, options=FAST)
    )


async def test_streams_text_usage_and_finish_and_sends_the_real_request() -> None:
    with FakeOpenAI([openai_text(["Hel", "lo", " there"], usage=(11, 3))], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert events == [
        t.TextDelta("Hel"),
        t.TextDelta("lo"),
        t.TextDelta(" there"),
        t.Usage(11, 3),
        t.Finish("stop", "stop"),
    ]
    (seen,) = fake.requests
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Hello?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_bytes_split_mid_line_and_mid_character_reassemble() -> None:
    text = ["Grüße ", "aus ", "Köln 🎉", "!"]
    reply = rechunk(openai_text(text), size=3, pause=0.001)  # 3-byte writes split é/ü/🎉 and `data:`
    with FakeOpenAI([reply], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert text_of(events) == "".join(text)
    assert events[-1] == t.Finish("stop", "stop")


async def test_parallel_tool_calls_assemble_across_fragments() -> None:
    calls = [
        ("call_a", "get_weather", '{"city": "Paris", "days": [1, 2]}'),
        ("call_b", "get_time", '{"tz": "Europe/Paris"}'),
    ]
    reply = rechunk(openai_tool_calls(calls, split=3), size=7, pause=0.001)
    request = HELLO.model_copy(update={"tools": [WEATHER]})
    with FakeOpenAI([reply], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(request))
    ends = [e for e in events if isinstance(e, t.ToolCallEnd)]
    assert ends == [
        t.ToolCallEnd("call_a", "get_weather", {"city": "Paris", "days": [1, 2]}),
        t.ToolCallEnd("call_b", "get_time", {"tz": "Europe/Paris"}),
    ]
    for call_id, name, raw in calls:
        start = events.index(t.ToolCallStart(call_id, name))
        deltas = [e for e in events if isinstance(e, t.ToolCallDelta) and e.id == call_id]
        assert "".join(d.arguments_delta for d in deltas) == raw
        assert start < events.index(deltas[0])
    assert events[-2:] == [t.Usage(20, 9), t.Finish("tool_calls", "tool_calls")]
    assert fake.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
    ]


async def test_interleaved_fragments_and_arguments_before_the_name() -> None:
    chunks = [
        openai_chunk(
            {"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "a", "arguments": '{"x"'}}]}
        ),
        openai_chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"arguments": '{"y": '}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": "2}"}}]}),
        openai_chunk({}, "tool_calls"),
    ]
    with FakeOpenAI([openai_stream(chunks)], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    # b's name came after its first fragment: its start carries the buffered fragment first.
    assert events.index(t.ToolCallStart("c1", "b")) < events.index(t.ToolCallDelta("c1", '{"y": '))
    assert [e for e in events if isinstance(e, t.ToolCallEnd)] == [
        t.ToolCallEnd("c0", "a", {"x": 1}),
        t.ToolCallEnd("c1", "b", {"y": 2}),
    ]


async def test_gemini_style_calls_without_index_and_finish_stop() -> None:
    # Gemini's OpenAI endpoint sends each call whole, without `index`, and says "stop".
    def call(i: int) -> dict[str, object]:
        return {"id": f"g{i}", "type": "function", "function": {"name": "f", "arguments": f'{{"n": {i}}}'}}

    chunks = [
        openai_chunk({"role": "assistant", "tool_calls": [call(1)]}),
        openai_chunk({"tool_calls": [call(2)]}),
    ]
    chunks.append(openai_chunk({}, "stop"))
    with FakeOpenAI([openai_stream(chunks)], api_key=KEY) as fake:
        events = await drain(provider_for(fake, name="gemini").stream(HELLO))
    assert [e for e in events if isinstance(e, t.ToolCallEnd)] == [
        t.ToolCallEnd("g1", "f", {"n": 1}),
        t.ToolCallEnd("g2", "f", {"n": 2}),
    ]
    assert events[-1] == t.Finish("tool_calls", "stop")


async def test_deepseek_reasoning_content_becomes_a_closed_reasoning_block() -> None:
    reply = openai_text(["The answer", " is 4."], reasoning=["2+2", " is 4"])
    with FakeOpenAI([reply], api_key=KEY) as fake:
        events = await drain(provider_for(fake, name="deepseek").stream(HELLO))
    assert events[:4] == [
        t.ReasoningDelta("2+2"),
        t.ReasoningDelta(" is 4"),
        t.ReasoningEnd("2+2 is 4"),
        t.TextDelta("The answer"),
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("length", "length"), ("content_filter", "stop"), ("model_length", "length"), ("stop", "stop")],
)
async def test_finish_reasons_map_and_keep_the_raw_value(raw: str, reason: str) -> None:
    with FakeOpenAI([openai_text("x", finish=raw)], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert events[-1] == t.Finish(reason, raw)  # type: ignore[arg-type]


async def test_invalid_tool_arguments_fail_the_turn_with_protocol_error() -> None:
    reply = openai_tool_calls([("call_x", "get_weather", '{"city": "Par')])
    with FakeOpenAI([reply], api_key=KEY) as fake:
        events, err = await drain_error(provider_for(fake).stream(HELLO))
    assert err.code is Codes.LLM_PROTOCOL_ERROR and err.provider == "openai"
    assert "get_weather" in err.params["detail"]  # type: ignore[index]
    assert t.ToolCallStart("call_x", "get_weather") in events
    assert not any(isinstance(e, t.ToolCallEnd | t.Finish) for e in events)


async def test_non_object_tool_arguments_are_a_protocol_error() -> None:
    with FakeOpenAI([openai_tool_calls([("c", "f", "[1, 2]")])], api_key=KEY) as fake:
        _, err = await drain_error(provider_for(fake).stream(HELLO))
    assert err.code is Codes.LLM_PROTOCOL_ERROR


async def test_an_error_inside_the_stream_is_raised_after_the_partial_output() -> None:
    steps = openai_text(["partial"]).steps[:2]
    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}
    with FakeOpenAI([Reply(steps=[*steps, sse_data(error)])], api_key=KEY) as fake:
        events, err = await drain_error(provider_for(fake).stream(HELLO))
    assert text_of(events) == "partial"
    assert err.code is Codes.LLM_RATE_LIMITED
    assert len(fake.requests) == 1  # output had started: never retried


async def test_a_stream_that_ends_without_finish_or_done_is_a_protocol_error() -> None:
    reply = openai_stream([openai_chunk({"content": "Hi"})], done=False)
    with FakeOpenAI([reply], api_key=KEY) as fake:
        events, err = await drain_error(provider_for(fake).stream(HELLO))
    assert events == [t.TextDelta("Hi")]
    assert err.code is Codes.LLM_PROTOCOL_ERROR


async def test_a_json_answer_instead_of_a_stream_is_understood_as_an_error() -> None:
    replies = [
        json_reply(200, {"error": {"message": "model not loaded", "type": "server_error"}}),
        json_reply(200, {"choices": []}),
    ]
    with FakeOpenAI(replies, api_key=KEY) as fake:
        _, first = await drain_error(provider_for(fake).stream(HELLO))
        _, second = await drain_error(provider_for(fake).stream(HELLO))
    assert first.code is Codes.LLM_UNAVAILABLE
    assert second.code is Codes.LLM_PROTOCOL_ERROR


async def test_a_whole_tool_round_trip_is_accepted_by_the_wire_checks() -> None:
    request = t.ChatRequest(
        model="fake-model",
        messages=[
            t.ChatMessage(role="system", content="Be brief."),
            t.ChatMessage(role="user", content="Weather in Paris?"),
            t.ChatMessage(
                role="assistant",
                tool_calls=[t.ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})],
                reasoning=[t.ReasoningPart(text="need weather")],
            ),
            t.ChatMessage(role="tool", tool_call_id="call_1", name="get_weather", content='{"temp": 21}'),
        ],
        tools=[WEATHER],
        temperature=0.2,
        max_tokens=50,
    )
    with FakeOpenAI([openai_text("21 degrees.")], api_key=KEY) as fake:
        events = await drain(provider_for(fake, dialect=ENGINES["deepseek"].dialect).stream(request))
    assert text_of(events) == "21 degrees."  # the fake answers 400 to a malformed conversation
    body = fake.requests[0].json
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50


async def test_engine_dialects_shape_the_request() -> None:
    request = t.ChatRequest(
        model="m",
        messages=[
            t.ChatMessage(role="user", content="hi"),
            t.ChatMessage(role="assistant", tool_calls=[t.ToolCall(id="abcdefghi", name="f")]),
            t.ChatMessage(role="tool", tool_call_id="abcdefghi", name="f", content="ok"),
        ],
        max_tokens=64,
        thinking="high",
    )
    with FakeOpenAI([openai_text("a"), openai_text("b"), openai_text("c")], api_key=KEY) as fake:
        for engine in ("openai", "mistral", "deepseek"):
            await drain(provider_for(fake, ENGINES[engine].dialect, engine).stream(request))
    openai, mistral, deepseek = (r.json for r in fake.requests)
    assert openai["max_completion_tokens"] == 64 and "max_tokens" not in openai
    assert openai["reasoning_effort"] == "high"
    assert "stream_options" not in mistral and mistral["messages"][2]["name"] == "f"
    assert "reasoning_effort" not in mistral and mistral["max_tokens"] == 64
    assert "reasoning_effort" not in deepseek and "name" not in deepseek["messages"][2]


async def test_a_request_without_model_fails_before_any_http_call() -> None:
    with FakeOpenAI([], api_key=KEY) as fake:
        provider = tracked(OpenAICompatProvider(name="vllm", base_url=fake.base_url, options=FAST))
        _, err = await drain_error(provider.stream(t.ChatRequest(messages=HELLO.messages)))
    assert err.code is Codes.LLM_BAD_REQUEST and fake.requests == []


async def test_the_default_model_fills_in_and_a_keyless_server_gets_no_auth_header() -> None:
    with FakeOpenAI([openai_text("ok")]) as fake:
        provider = OpenAICompatProvider(
            name="ollama", base_url=fake.base_url, default_model="llama3.2", options=FAST
        )
        await drain(provider.stream(t.ChatRequest(messages=HELLO.messages)))
        await provider.aclose()
    assert fake.requests[0].json["model"] == "llama3.2"
    assert "authorization" not in fake.requests[0].headers


async def test_the_api_key_never_shows_in_repr_or_errors() -> None:
    with FakeOpenAI([], api_key="the-right-key") as fake:
        provider = provider_for(fake)
        _, err = await drain_error(provider.stream(HELLO))
    assert err.code is Codes.LLM_AUTH_FAILED
    for text in (repr(provider), str(err), json.dumps(err.envelope().model_dump())):
        assert KEY not in text


async def test_sse_comments_crlf_and_multiline_data() -> None:
    chunk = json.dumps(openai_chunk({"content": "multi"}), indent=1)  # a JSON document over several lines
    body = (
        b": keep-alive comment\r\n\r\n"
        + b"".join(b"data: " + line.encode() + b"\r\n" for line in chunk.splitlines())
        + b"\r\n"
        + b"event: message\r\ndata:"
        + json.dumps(openai_chunk({}, "stop")).encode()
        + b"\r\n\r\n"
        + b"data: [DONE]"  # no final blank line
    )
    with FakeOpenAI([rechunk(Reply(steps=[body]), size=5, pause=0.001)], api_key=KEY) as fake:
        events = await drain(provider_for(fake).stream(HELLO))
    assert events == [t.TextDelta("multi"), t.Finish("stop", "stop")]


async def test_a_result_that_arrived_after_the_user_spoke_is_moved_next_to_its_call() -> None:
    request = weather_call_then("Hurry up", call_id="call_w", model="fake-model")
    with FakeOpenAI([openai_text("Sunny.")], api_key=KEY) as fake:
        assert text_of(await drain(provider_for(fake).stream(request))) == "Sunny."  # else a 400
    assert [m["role"] for m in fake.requests[0].json["messages"]] == ["user", "assistant", "tool", "user"]


async def test_a_call_left_without_result_is_refused_upstream_not_papered_over() -> None:
    # Answering interrupted calls (e.g. with an error result) is the runtime's decision.
    request = weather_call_then("Never mind", call_id="call_w", model="fake-model", result=None)
    with FakeOpenAI([openai_text("unused")], api_key=KEY) as fake:
        _, err = await drain_error(provider_for(fake).stream(request))
    assert err.code is Codes.LLM_BAD_REQUEST and "call_w" in (err.detail or "")


class ImportWatch(importlib.abc.MetaPathFinder):
    """Records every module the import system looks for (a name already imported is never looked
    for: `import x` of a loaded module is a dictionary lookup)."""

    def __init__(self) -> None:
        self.looked_for: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        self.looked_for.append(name)


async def test_a_streamed_answer_searches_for_no_module() -> None:
    """httpcore imports sniffio on every request and body read; without it installed each one
    searched sys.path (a failed import, a dozen stats): ~8 % of a worker's CPU while LLMs stream.
    After a first request, the next ones import nothing."""
    script = [openai_text(["Hel", "lo", " there"]) for _ in range(3)]
    with FakeOpenAI(script, api_key=KEY) as fake:
        provider = provider_for(fake)
        await drain(provider.stream(HELLO))  # the first request may import what it uses
        watch = ImportWatch()
        sys.meta_path.insert(0, watch)
        try:
            for _ in range(2):
                assert text_of(await drain(provider.stream(HELLO))) == "Hello there"
        finally:
            sys.meta_path.remove(watch)
    assert watch.looked_for == []
