"""The built-in engine: deterministic, documented output, paced streaming, cancellation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from parley_runtime.llm import BuiltinProvider, LLMSettings
from parley_runtime.llm import types as t
from parley_runtime.llm.builtin import BURST, GREETING

from .support import WEATHER, cancel_when, drain, text_of

FAST = BuiltinProvider(pace_ms=0)


def conversation(*messages: tuple[str, str], **kwargs: object) -> t.ChatRequest:
    return t.ChatRequest(
        model="any",
        messages=[t.ChatMessage(role=role, content=content) for role, content in messages],
        **kwargs,
    )


async def test_the_same_request_yields_the_same_events() -> None:
    request = conversation(
        ("system", "You are Ada."), ("user", 'call get_weather {"city": "Oslo"}'), tools=[WEATHER]
    )
    first, second = await drain(FAST.stream(request)), await drain(FAST.stream(request))
    assert first == second
    other = conversation(
        ("user", "hi"), ("assistant", "hello"), ("user", 'call get_weather {"city": "Oslo"}'), tools=[WEATHER]
    )
    other_ids = {e.id for e in await drain(FAST.stream(other)) if isinstance(e, t.ToolCallStart)}
    assert other_ids and other_ids.isdisjoint({e.id for e in first if isinstance(e, t.ToolCallStart)})


async def test_echoes_the_last_user_message_word_by_word() -> None:
    events = await drain(
        FAST.stream(conversation(("user", "first"), ("assistant", "ok"), ("user", "  Hello\n  world  ")))
    )
    assert events == [
        t.TextDelta("You "),
        t.TextDelta("said: "),
        t.TextDelta('"Hello '),
        t.TextDelta('world".'),
        t.Usage(input_tokens=4, output_tokens=4),
        t.Finish("stop"),
    ]


async def test_speaks_as_the_persona_of_the_system_prompt_and_lists_tools() -> None:
    request = conversation(
        ("system", "You are a friendly support agent for Acme. Never swear."),
        ("user", "Where is my order?"),
        tools=[WEATHER],
    )
    text = text_of(await drain(FAST.stream(request)))
    assert text == (
        'As a friendly support agent for Acme, I heard: "Where is my order?". Tools I can call: get_weather.'
    )


async def test_greets_when_there_is_no_user_turn_to_answer() -> None:
    assert text_of(await drain(FAST.stream(conversation(("system", "You are Bob."))))) == GREETING
    assert text_of(await drain(FAST.stream(conversation(("user", "x"), ("assistant", "y"))))) == GREETING


async def test_long_messages_are_quoted_up_to_200_characters() -> None:
    text = text_of(await drain(FAST.stream(conversation(("user", "a" * 500)))))
    assert text == 'You said: "' + "a" * 199 + '…".'


async def test_call_trigger_emits_a_tool_call() -> None:
    request = conversation(("user", 'Call get_weather {"city": "Oslo", "days": 3}'), tools=[WEATHER])
    events = await drain(FAST.stream(request))
    start = events[0]
    assert isinstance(start, t.ToolCallStart) and start.name == "get_weather" and start.id.startswith("call_")
    deltas = [e for e in events if isinstance(e, t.ToolCallDelta)]
    assert "".join(d.arguments_delta for d in deltas) == '{"city":"Oslo","days":3}'
    assert all(len(d.arguments_delta) <= 16 for d in deltas)
    assert events[-3:] == [
        t.ToolCallEnd(start.id, "get_weather", {"city": "Oslo", "days": 3}),
        t.Usage(input_tokens=6, output_tokens=len(deltas)),
        t.Finish("tool_calls"),
    ]


async def test_call_without_arguments_passes_an_empty_object() -> None:
    events = await drain(FAST.stream(conversation(("user", "call get_weather"), tools=[WEATHER])))
    assert next(e for e in events if isinstance(e, t.ToolCallEnd)).arguments == {}


@pytest.mark.parametrize("message", ['call get_weather {"city": ', "call get_weather [1]"])
async def test_call_with_bad_arguments_explains_instead(message: str) -> None:
    text = text_of(await drain(FAST.stream(conversation(("user", message), tools=[WEATHER]))))
    assert text == "I cannot call get_weather: its arguments must be a JSON object."


async def test_call_of_an_unavailable_tool_is_just_echoed() -> None:
    events = await drain(FAST.stream(conversation(("user", 'call launch_rockets {"n": 1}'), tools=[WEATHER])))
    assert not any(isinstance(e, t.ToolCallStart) for e in events)
    assert text_of(events).startswith('You said: "call launch_rockets')


async def test_answers_a_tool_result_with_the_tool_name() -> None:
    request = t.ChatRequest(
        model="any",
        tools=[WEATHER],
        messages=[
            t.ChatMessage(role="user", content="call get_weather"),
            t.ChatMessage(role="assistant", tool_calls=[t.ToolCall(id="c1", name="get_weather")]),
            t.ChatMessage(role="tool", tool_call_id="c1", content=json.dumps({"temp": 21})),
        ],
    )
    events = await drain(FAST.stream(request))
    assert text_of(events) == 'The get_weather tool returned: {"temp": 21}'
    assert events[-1] == t.Finish("stop")  # the agent loop ends here


async def test_max_tokens_truncates_with_finish_length() -> None:
    events = await drain(FAST.stream(conversation(("user", "one two three four five"), max_tokens=3)))
    assert [e for e in events if isinstance(e, t.TextDelta)] == [
        t.TextDelta("You "),
        t.TextDelta("said: "),
        t.TextDelta('"one '),
    ]
    assert events[-1] == t.Finish("length")


async def test_thinking_streams_a_reasoning_block_first() -> None:
    events = await drain(FAST.stream(conversation(("user", "two words"), thinking=True)))
    reasoning = [e for e in events if isinstance(e, t.ReasoningDelta)]
    end = events[len(reasoning)]
    assert isinstance(end, t.ReasoningEnd) and end.text == "".join(r.text for r in reasoning)
    assert (
        end.text == "The last message is from the user and has 2 words. I answer with the built-in template."
    )
    assert isinstance(events[len(reasoning) + 1], t.TextDelta)


async def test_pace_spaces_the_tokens() -> None:
    request = conversation(("user", "a b c"))  # 5 text tokens: You said: "a b c".
    paced = BuiltinProvider(pace_ms=40)
    started = time.monotonic()
    arrivals = [time.monotonic() - started async for _ in paced.stream(request)]
    assert len(arrivals) == 7  # 5 tokens, usage, finish
    assert arrivals[0] >= 0.035  # the pause comes before each token, the first included
    assert arrivals[4] >= 5 * 0.04 * 0.9


async def test_pace_zero_is_fast() -> None:
    request = conversation(("user", " ".join(["w"] * 95)))  # ~100 tokens: 2 s at the default pace
    started = time.monotonic()
    events = await drain(FAST.stream(request))
    assert len(events) > 95 and time.monotonic() - started < 0.5


async def test_pace_zero_streams_a_burst_with_a_loop_turn_every_few_tokens() -> None:
    """At pace 0 the tokens come as a burst (no loop turn each), yet a long answer can still be
    cancelled part way."""
    request = conversation(("user", " ".join(["w"] * 95)))  # ~100 text tokens
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    events = await drain(FAST.stream(request))
    during = turns - before
    counter.cancel()
    assert len(events) > 95 and during <= len(events) // BURST + 1, during

    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for _ in FAST.stream(request):
            seen += 1

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)  # it starts, and stops at its first loop turn
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert 0 < seen <= BURST


async def test_cancelling_mid_stream_stops_it() -> None:
    slow = BuiltinProvider(pace_ms=300)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in slow.stream(conversation(("user", "hello there"))):
            first.set()

    cancelled_at = await cancel_when(first, asyncio.create_task(consume()), timeout_s=3)
    assert time.monotonic() - cancelled_at < 0.1  # well before the next token was due


def test_pace_comes_from_the_runtime_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_RUNTIME_BUILTIN_PACE_MS", "0")
    assert LLMSettings().runtime_builtin_pace_ms == 0
    monkeypatch.delenv("PARLEY_RUNTIME_BUILTIN_PACE_MS")
    assert LLMSettings().runtime_builtin_pace_ms == 20
