"""`bench.sse_provider` (the model of `bench.perf --provider openai`) and the bench's use of it."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from parley_runtime.llm import ChatMessage, ChatRequest, OpenAICompatProvider, TextDelta

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import sse_provider
from bench._smoke import run


async def answer(base_url: str, messages: list[ChatMessage]) -> list[str]:
    provider = OpenAICompatProvider(name="openai", base_url=base_url, api_key=sse_provider.API_KEY)
    try:
        request = ChatRequest(model=sse_provider.MODEL, messages=messages)
        return [e.text async for e in provider.stream(request) if isinstance(e, TextDelta)]
    finally:
        await provider.aclose()


async def test_it_answers_as_the_builtin_engine_a_word_per_chunk_and_counts_what_it_answered() -> None:
    proc, base_url = sse_provider.start(pace_ms=1)
    try:
        system = ChatMessage(role="system", content="Be brief.")
        said = await answer(base_url, [system, ChatMessage(role="user", content="hello  there")])
        assert said == ["You ", "said: ", '"hello ', 'there".']
        greeting = await answer(base_url, [system])
        assert "".join(greeting) == sse_provider.GREETING
    finally:
        assert sse_provider.stop(proc) == 2


def test_bench_perf_sends_the_stacks_turns_to_it() -> None:
    """The stack's runtime answers through the provider, not the built-in engine (whose words are
    the same): the provider counts the requests of both phases that send turns."""
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "REDIS_URL", "DATABASE_URL"}}
    argv = ["--provider", "openai", "--provider-pace-ms", "1", "--sessions", "2", "--turns", "2"]
    argv += ["--levels", "0", "--idle", "0", "--iterations", "2", "--warmup", "1"]
    argv += ["--verify-iterations", "55", "--idle-hold", "0"]
    out = run("perf", *argv, env=env)
    assert "CPU per turn (text turn, OpenAI-compatible SSE over HTTP (bench.sse_provider), 1 ms" in out, out
    found = re.search(r"answered (\d+) chat completions", out)
    assert found is not None and int(found.group(1)) >= 2 * 2 + 2 + 1, out
