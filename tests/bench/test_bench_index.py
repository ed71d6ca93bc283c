"""`python -m bench` (what `make bench` runs): every module it runs is a benchmark with a `main`;
the modules the benchmarks share (a client, the report, the stack) are not run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.__main__ import main, modules


def test_every_listed_module_is_a_benchmark_and_the_shared_ones_are_not_listed() -> None:
    listed = modules()
    assert {"perf", "realtime", "client_cost", "tick_path", "heartbeat"} <= set(listed)
    assert not {"client_loop", "lean_ws", "perf_report", "perf_stack"} & set(listed)
    for name in listed:
        assert callable(importlib.import_module(f"bench.{name}").main), name


def test_an_unknown_name_is_refused_with_the_list(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lean_ws"]) == 2
    assert "unknown benchmark(s): lean_ws; available: " in capsys.readouterr().err
