"""Smoke test of `bench.input_path`: a tiny run end to end, checking that both paths read every
input and print their row, never the figures (nats-server's CPU clock ticks every 10 ms, and its
memory moves by pages: too coarse for 40 sessions)."""

from __future__ import annotations

import re

from bench._smoke import run

NUMBER = r"\s+(-?[\d.]+|nan)"
ROW = rf"^(consumer per session|republished){NUMBER * 6}$"


def test_input_path_prints_both_paths() -> None:
    out = run("input_path", "--sessions", "40", "--inputs", "3", "--rounds", "1", timeout=180)
    rows = {name: [float(v) for v in values] for name, *values in re.findall(ROW, out, re.M)}
    assert set(rows) == {"consumer per session", "republished"}, out
    assert all(len(values) == 6 for values in rows.values()), out
