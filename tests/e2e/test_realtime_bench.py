"""Smoke test of `bench.realtime`: a tiny run end to end, checking the tables, never the timings."""

from __future__ import annotations

import os
import re
from typing import Any

from bench._smoke import run

MS = r"\d+\.\d{3} ms"
RATIO = r"\d+\.\d{2}x"
LATENCY = re.compile(
    rf"^input_text → (first text_delta|turn_complete)(\s+{MS}){{6}}\s+{RATIO}\s+{RATIO}$", re.M
)
HELD = re.compile(r"^held with p99 turn latency under 100 ms: (\d+ sessions|none of the levels)", re.M)
LEVEL = re.compile(rf"^(\d+)\s+(\d+)\s+{MS}\s+{MS}$", re.M)


def test_realtime_bench_prints_latency_ratios_and_capacity(infra: Any) -> None:
    # Redis and PostgreSQL from the session (the bench makes a fresh database); NATS its own, since
    # other modules' auth and catalog apps serve their queue groups on the session's NATS.
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(REDIS_URL=infra.redis_url, DATABASE_URL=infra.database_url)
    argv = ["--iterations", "10", "--warmup", "2", "--levels", "2,4", "--turns", "2", "--think-ms", "100"]
    out = run("realtime", *argv, env=env)
    assert sorted(m.group(1) for m in LATENCY.finditer(out)) == ["first text_delta", "turn_complete"], out
    assert "ratio = full path / in-process" in out
    levels = [(int(m.group(1)), int(m.group(2))) for m in LEVEL.finditer(out)]
    # Every session of a level takes its turns (unless a level went over the limit and ended the run).
    assert levels[0] == (2, 4) and all(turns == sessions * 2 for sessions, turns in levels), out
    assert HELD.search(out), out
