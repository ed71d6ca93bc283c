"""A provider speaking OpenAI's Chat Completions SSE on loopback, for `bench.perf --provider openai`.

`python -m bench.sse_provider [--pace-ms 20]` prints its base URL (`http://127.0.0.1:<port>/v1`)
and serves until stopped. It answers as the built-in engine does ('You said: "…".', the greeting
to a conversation without a user message yet), one word per SSE chunk with `--pace-ms` between
chunks, over the same local fake the runtime's provider tests use (services/runtime/tests/llm/
fakes.py: HTTP/1.1, keep-alive, the API key and the request body checked as OpenAI does). Run as
a process of its own so that its CPU is neither the stack's nor the bench clients': it stands for
the model's servers.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

API_KEY = "sk-bench"
MODEL = "bench-model"
GREETING = "Hello! How can I help you today?"
_WORD = re.compile(r"\S+\s*")


def answer_text(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") != "system"), None)
    if last is None or last.get("role") != "user":
        return GREETING
    return f'You said: "{" ".join(str(last.get("content", "")).split())}".'


def environment(base_url: str) -> dict[str, str]:
    """What `parley run` needs to send every agent without an engine of its own here."""
    return {
        "PARLEY_LLM_DEFAULT_ENGINE": "openai",
        "PARLEY_LLM_OPENAI_API_KEY": API_KEY,
        "PARLEY_LLM_OPENAI_BASE_URL": base_url,
        "PARLEY_LLM_OPENAI_MODEL": MODEL,
    }


def start(pace_ms: float) -> tuple[subprocess.Popen[str], str]:
    """This module as a process of its own, and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sse_provider", "--pace-ms", str(pace_ms)],
        cwd=Path(__file__).parents[1],  # the repository: the fakes are loaded from tests/
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"bench.sse_provider did not start (exit {proc.wait()})")
    return proc, base_url


def stop(proc: subprocess.Popen[str]) -> int:
    """Stop the provider `start` started; the chat completions it answered."""
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    found = re.search(r"^requests (\d+)$", out, re.M)
    return int(found.group(1)) if found else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pace-ms", type=float, default=20.0, help="pause before each SSE chunk")
    args = parser.parse_args(argv)
    # Only the server process loads the fakes (from tests/); `bench.perf` imports this module.
    from tests.e2e.llm_fakes import FakeOpenAI, Pause, openai_text

    pace_s = args.pace_ms / 1000

    def reply(seen: Any) -> Any:
        answer = openai_text(_WORD.findall(answer_text(seen.json["messages"])))
        steps: list[Any] = []
        for step in answer.steps:  # each SSE chunk its own write, `pace_s` after the one before
            if steps and pace_s:
                steps.append(Pause(pace_s))
            steps.append(step)
        answer.steps = steps
        return answer

    fake = FakeOpenAI(reply, api_key=API_KEY)
    counted = fake.requests = _Counted()  # a long bench would otherwise keep every request
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    fake.start()
    print(fake.base_url, flush=True)
    stopped.wait()
    print(f"requests {counted.count}", flush=True)  # what `stop` reads: proof the stack came here


class _Counted(list[Any]):
    count = 0

    def append(self, item: Any) -> None:
        self.count += 1


if __name__ == "__main__":
    main()
