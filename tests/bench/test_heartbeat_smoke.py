"""Smoke test of `bench.heartbeat`: a tiny run end to end (an embedded nats-server), checking the
table, never the timings."""

from __future__ import annotations

import re

from bench._smoke import run

ROW = re.compile(r"^\s+(\d+)\s+\d+\.\d\d\s+\d+\.\d\d\s+\d\.\d\d$", re.M)


def test_heartbeat_bench_prints_each_round_and_the_medians() -> None:
    out = run("heartbeat", "--sessions", "50", "--beats", "2", "--rounds", "2", timeout=120)
    assert [m.group(1) for m in ROW.finditer(out)] == ["1", "2"], out
    assert re.search(r"^median\s+\d+\.\d\d\s+\d+\.\d\d\s+\d\.\d\d$", out, re.M), out
