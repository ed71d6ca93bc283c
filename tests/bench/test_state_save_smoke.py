"""Smoke test of `bench.state_save`: a tiny run end to end against the session's Redis, checking
the table, never the timings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^(ten-turn conversations|long conversation), .+?\s+\d+\.\d µs\s+\d+\.\d µs\s+\d+\.\d{2}x$", re.M
)


def test_state_save_bench_prints_both_saves_and_their_ratio(infra: Any) -> None:
    env = {**os.environ, "REDIS_URL": infra.redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.state_save", "--turns", "20", "--rounds", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.splitlines()[0].split() == ["conversation", "whole", "document", "history", "list", "ratio"], (
        out
    )
    assert sorted(m.group(1) for m in ROW.finditer(out)) == ["long conversation", "ten-turn conversations"], (
        out
    )
    assert "ratio = history list / whole document" in out
