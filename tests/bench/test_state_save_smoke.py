"""Smoke test of `bench.state_save`: a tiny run end to end against the session's Redis, checking
the table, never the timings."""

from __future__ import annotations

import os
import re
from typing import Any

from bench._smoke import run

ROW = re.compile(
    r"^(ten-turn conversations|long conversation), .+?\s+\d+\.\d µs\s+\d+\.\d µs\s+\d+\.\d{2}x$", re.M
)


def test_state_save_bench_prints_both_saves_and_their_ratio(infra: Any) -> None:
    env = {**os.environ, "REDIS_URL": infra.redis_url}
    out = run("state_save", "--turns", "20", "--rounds", "2", env=env, timeout=120)
    assert out.splitlines()[0].split() == ["conversation", "whole", "document", "history", "list", "ratio"], (
        out
    )
    assert sorted(m.group(1) for m in ROW.finditer(out)) == ["long conversation", "ten-turn conversations"], (
        out
    )
    assert "ratio = history list / whole document" in out
