"""Smoke test of `bench.turn_floor`: the floor's stand-ins behind a real edge, nats-server, Valkey
and PostgreSQL answer every turn of a tiny run and greet every session opened, and the report says
so; and the report's arithmetic on two known phases (the run's own figures move with the machine,
so they are not checked)."""

from __future__ import annotations

import io
import re

from bench._smoke import run
from bench.machine import MachineSpeed
from bench.perf_report import CpuPhase
from bench.turn_floor import report

PROCESSES = {
    "gateway",
    "runtime (all workers)",
    "catalog",
    "nats-server",
    "redis (valkey)",
    "postgres",
    "caddy",
}


def test_the_floor_answers_every_turn_and_prints_each_process() -> None:
    out = run(
        "turn_floor",
        *("--sessions", "6", "--turns", "3", "--think-ms", "200", "--open", "20", "--open-rate", "50"),
        "--no-stack",
        timeout=300,
    )
    assert re.search(r"^6 sessions x one message .*; the floor 18 turns \(", out, re.M), out
    rows = dict(re.findall(r"^(\S.*?)\s{2,}([\d.]+)\s+-?[\d.]+$", out, re.M))
    assert PROCESSES | {"whole stack"} <= set(rows), out
    assert float(rows["whole stack"]) > 0, out
    assert re.search(r"^the floor, whole stack: [\d.]+ ms a turn", out, re.M), out
    assert re.search(r"^the floor: 20 of 20 opened in ", out, re.M), out
    assert re.search(r"^the floor, whole stack: [\d.]+ ms an opening", out, re.M), out


def test_the_report_sets_parley_beside_the_floor() -> None:
    floor = CpuPhase(10, 100, 10.0, {"gateway": 0.1, "runtime (all workers)": 0.1}, [1.0], {"gateway": 0.001})
    stack = CpuPhase(10, 100, 10.0, {"gateway": 0.2, "runtime (all workers)": 0.3}, [2.0])
    out = io.StringIO()
    report(floor, stack, MachineSpeed(0.3, 0.3), out)
    text = out.getvalue()
    assert re.search(r"^gateway\s+1\.000\s+0\.900\s+2\.000\s+2\.000$", text, re.M), text
    assert "the floor, whole stack: 2.000 ms a turn, 0.80 times the target of 2.5 ms" in text
    own = (
        "parley run, whole stack: 5.000 ms a turn, 2.50 times the floor "
        "(Parley's own work: 3.000 ms; the target leaves it 0.500)"
    )
    assert own in text
