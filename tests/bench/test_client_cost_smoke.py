"""Smoke test of `bench.client_cost`: a tiny run end to end (a websockets server in a process of its
own), checking the table and that every held session of both clients stayed open, never the
timings."""

from __future__ import annotations

import re

from bench._smoke import run

ROW = re.compile(r"^\s+(\d+)\s+(websockets|lean)\s+\d+\.\d\s+\d+\.\d\d\s+(\d+)$", re.M)


def test_client_cost_prints_both_clients_each_round_with_every_session_held() -> None:
    out = run("client_cost", "--sessions", "20", "--rounds", "2", "--hold-s", "0.5", timeout=120)
    rows = [(m.group(1), m.group(2), m.group(3)) for m in ROW.finditer(out)]
    assert sorted(rows) == [
        ("1", "lean", "20"),
        ("1", "websockets", "20"),
        ("2", "lean", "20"),
        ("2", "websockets", "20"),
    ], out
    median = r"^median per tick read: websockets \d+\.\d µs, lean \d+\.\d µs, ratio \d\.\d\d$"
    assert re.search(median, out, re.M), out
