"""Smoke test of `bench.wakeup`: a tiny run end to end (a timer and a writer process), checking the
table, never the timings."""

from __future__ import annotations

import re

from bench._smoke import run

ROW = re.compile(r"^\s+(\d+\.\d) ms\s+\d+\.\d\s+\d+x\s+\d+\.\d\s+\d+x$", re.M)


def test_wakeup_bench_prints_each_pause_against_the_baseline() -> None:
    out = run("wakeup", "--pauses", "0.5,1", "--count", "20", timeout=120)
    assert re.search(r"^a loop turn without sleeping: \d+\.\d µs CPU \(the baseline\)$", out, re.M), out
    assert [m.group(1) for m in ROW.finditer(out)] == ["0.5", "1.0"], out
