"""Smoke test of `bench.tick_path`: a tiny run end to end (a uvicorn server, a client process),
checking the table and that every tick sent reached the client, never the timings."""

from __future__ import annotations

import re

from bench._smoke import run

# round, this process's CPU per tick three ways and the ratio, then the reading client's three ways
ROW = re.compile(r"^\s+(\d+)(\s+\d+\.\d\d){3}\s+\d\.\d\d(\s+\d+\.\d\d){3}$", re.M)


def test_tick_path_prints_each_round_and_every_tick_reaches_the_client() -> None:
    out = run("tick_path", "--sockets", "20", "--rounds", "2", "--ticks", "3", timeout=120)
    assert [m.group(1) for m in ROW.finditer(out)] == ["1", "2"], out
    assert re.search(r"^frames the client read: 360 of 360 sent$", out, re.M), out
