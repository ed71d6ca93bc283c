"""`bench.perf`'s report: every figure of issue 13 printed with its target, marked by the figures
(synthetic measurements; the real run is `python -m bench.perf`, see docs/performance.md)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import machine, perf_pair
from bench.machine import MachineSpeed, reference_s
from bench.perf import options
from bench.perf_report import Admission, CpuPhase, KillReport, VerifyFigures, compare, figures, report
from bench.perf_stack import edges_for, group_of
from bench.realtime import Latency, Level


def phases(cpu_s: float, kill: KillReport | None = None) -> tuple[CpuPhase, Admission]:
    cpu = CpuPhase(
        sessions=10,
        turns=1000,
        seconds=10.0,
        cpu_s={"runtime (all workers)": cpu_s * 0.6, "gateway": cpu_s * 0.4},
        latencies=[5.0, 6.0, 7.0],
        idle_rate={"runtime (all workers)": 0.01, "gateway": 0.01},
        per_process={
            "runtime-1": 1.0,
            "runtime-2": 1.0,
            "session_gateway-1": 0.5,
            "session_gateway-2": 0.5,
            "caddy-1": 0.2,
            "caddy-2": 0.2,
        },
        kill=kill,
    )
    admission = Admission(
        asked=1000,
        admitted=1000,
        failed=0,
        seconds=1.5,
        rss_before={"gateway": 0.0, "caddy": 0.0},
        rss_after={"gateway": 40 * 1024 * 1000.0, "caddy": 90 * 1024 * 1000.0},
        open_ms=[10.0, 20.0],
        verifies_over_bus=0,
        failures=[],
        spread={
            "runtime-1": 500,
            "runtime-2": 500,
            "session_gateway-1": 500,
            "session_gateway-2": 500,
            "caddy-1": 496,
            "caddy-2": 504,
        },
        idle_rate={"gateway": 0.06, "caddy": 0.03},
        open_cpu={"gateway": 5.0, "caddy": 1.0},
    )
    return cpu, admission


def report_text(cpu: CpuPhase, admission: Admission, levels: list[Level]) -> str:
    out = io.StringIO()
    report(
        latency=[Latency("input_text → first text_delta", [0.1] * 10, [1.0] * 10)],
        cpu=cpu,
        levels=levels,
        admission=admission,
        verify=VerifyFigures(bus=[3.0] * 100, client=[0.002] * 100),
        think_ms=1000.0,
        out=out,
    )
    return out.getvalue()


def render(*, cpu_s: float, verifies: float, kill: KillReport | None = None) -> str:
    cpu, admission = phases(cpu_s, kill)
    admission.verifies_over_bus = verifies
    return report_text(cpu, admission, [Level(600, [50.0] * 100)])


def test_every_figure_has_its_target_and_a_mark_that_follows_it() -> None:
    text = render(cpu_s=2.0, verifies=1)  # 2 ms per turn
    assert "target whole stack <= 2.5 ms: ok" in text
    assert "<= 2.0 ms p50: ok, <= 8.0 ms p99: ok" in text
    assert "largest level with p99 <= 100 ms: 600 (target >= 600: ok)" in text
    assert "sessions/s admitted (target >= 500: ok)" in text
    assert "gateway 40.0 KiB/session (target <= 64: ok)" in text
    assert "stack 130.0 KiB/session (target <= 150: ok)" in text
    assert "idle sessions held: 1000 (target >= 10000: MISSED)" in text
    assert "CPU per session opened: 6.0 ms (gateway 5.00, caddy 1.00)" in text
    assert "== CPU per turn (text turn, built-in engine, zero pace)" in text
    idle = text[text.index("the 1000 sessions held open and silent:") :]
    rows = {line.split()[0]: line.split()[-2:] for line in idle.splitlines()[2:5]}
    assert rows == {"gateway": ["60.0", "60.0"], "caddy": ["30.0", "30.0"], "whole": ["90.0", "90.0"]}
    assert "bus): ok" in text
    assert "session_gateway-2" in text and "== Spread over edges, gateways and workers" in text
    spread = {line.split()[0]: line.split()[1:] for line in text.split("== Spread")[1].splitlines()[2:8]}
    assert spread["caddy-1"] == ["0.200", "496"] and spread["caddy-2"] == ["0.200", "504"]

    text = render(cpu_s=12.0, verifies=50)  # 12 ms per turn; 5 % of verifications over the bus
    assert "target whole stack <= 2.5 ms: MISSED" in text
    assert "5.0 % per session opened" in text and "bus): MISSED" in text


def test_a_nats_node_killed_is_reported_with_losses_and_stall() -> None:
    kill = KillReport(
        "nats-2", asked=100, answered=99, failures=["RuntimeError: x"], doubled=0, worst_ms=5100, around=30
    )
    text = render(cpu_s=2.0, verifies=0, kill=kill)
    assert "== A NATS node killed mid-load (nats-2" in text
    assert "turns asked 100, answered 99, lost 1" in text and "answered twice 0" in text
    assert "5100 ms" in text and "failed 1x: RuntimeError: x" in text


def test_processes_are_grouped_as_the_report_shows_them() -> None:
    assert [group_of(n) for n in ("nats", "nats-3", "runtime-2", "session_gateway-1", "postgres")] == [
        "nats-server",
        "nats-server",
        "runtime (all workers)",
        "gateway",
        "postgres",
    ]


def test_the_figures_written_as_json_are_the_reports_by_process() -> None:
    cpu, admission = phases(cpu_s=2.0)
    got = figures(cpu, admission)
    assert got["CPU ms per turn"] == pytest.approx(
        {"runtime (all workers)": 1.2, "gateway": 0.8, "whole stack": 2.0}
    )
    assert got["CPU ms per session opened"] == pytest.approx(
        {"gateway": 5.0, "caddy": 1.0, "whole stack": 6.0}
    )
    assert got["sessions admitted per s"] == pytest.approx({"whole stack": 1000 / 1.5})
    assert got["idle CPU ms per s (the CPU phase's sessions open, silent)"] == pytest.approx(
        {"runtime (all workers)": 10.0, "gateway": 10.0, "whole stack": 20.0}
    )
    assert got["idle CPU µs per s per held session"] == pytest.approx(
        {"gateway": 60.0, "caddy": 30.0, "whole stack": 90.0}
    )
    assert set(figures(cpu, None)) == {  # no admission phase
        "CPU ms per turn",
        "idle CPU ms per s (the CPU phase's sessions open, silent)",
    }


def test_a_pair_is_compared_process_by_process() -> None:
    base = {
        "CPU ms per turn": {"gateway": 1.0, "runtime (all workers)": 2.0, "whole stack": 3.0, "gone": 1.0}
    }
    this = {"CPU ms per turn": {"gateway": 0.9, "runtime (all workers)": 2.2, "whole stack": 3.1}}
    out = io.StringIO()
    compare(base, this, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "== CPU ms per turn"
    assert lines[1].split() == ["process", "base", "this", "tree", "change"]
    rows = [line.split() for line in lines[2:]]
    assert rows[0][:2] == ["runtime", "(all"] and rows[0][-2:] == ["+10.0", "%"]  # the largest first
    assert rows[1] == ["gateway", "1.000", "0.900", "-10.0", "%"]
    assert rows[-1] == ["whole", "stack", "3.000", "3.100", "+3.3", "%"]  # the whole stack last
    assert len(rows) == 3  # a process only one run had is left out


def test_a_pair_without_a_base_is_skipped_and_a_missing_base_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    perf_pair.main([])  # what `make bench` does: no base to compare with
    assert "bench.perf_pair: skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        perf_pair.main(["--base-python", str(tmp_path / "nothing" / "python")])
    assert "no such interpreter" in capsys.readouterr().err


def test_sessions_the_stack_closed_before_the_end_are_not_counted_as_held() -> None:
    cpu, admission = phases(cpu_s=2.0)
    admission.open_at_rss, admission.still_open = 800, 600
    text = report_text(cpu, admission, [])
    assert "idle sessions held: 600 (400 of the admitted closed by the stack before the end)" in text
    assert "gateway 50.0 KiB/session" in text  # memory over the 800 open when it was read
    assert "the 600 sessions held open and silent:" in text
    idle = text[text.index("the 600 sessions held open and silent:") :]
    assert idle.splitlines()[2].split()[-1] == "100.0"  # the gateway's 0.06 s/s over 600


def test_the_bench_clients_own_cpu_is_reported_beside_the_stacks() -> None:
    assert "the bench's own clients" not in render(cpu_s=2.0, verifies=0)  # not measured: not printed
    cpu, admission = phases(cpu_s=2.0)
    cpu.client_cpu, admission.client_cpu = 1.5, 3.0
    text = report_text(cpu, admission, [])
    assert "the bench's own clients, on the same cores: 1.500 ms/turn" in text  # 1.5 s over 1,000 turns
    assert "the bench's own clients, on the same cores: 3.0 ms per session opened" in text
    assert "target whole stack <= 2.5 ms: ok" in text  # the clients' CPU is not the stack's


def test_the_garbage_collectors_share_is_printed_when_the_stack_counts_it() -> None:
    assert "garbage collection" not in render(cpu_s=2.0, verifies=0)  # a tree without the metric
    cpu, admission = phases(cpu_s=2.0)
    cpu.gc_s = {"gateway": 0.1, "runtime (all workers)": 0.2, "auth": 0.0}
    admission.open_gc = {"gateway": 0.3}
    text = report_text(cpu, admission, [])
    # 0.3 s over 1,000 turns; 0.3 s over 1,000 sessions opened; a group that spent nothing left out
    assert "of which garbage collection: 0.300 ms/turn (runtime (all workers) 0.200, gateway 0.100)" in text
    assert "of which garbage collection: 0.300 ms per session opened (gateway 0.300)" in text


def test_the_cpu_phase_says_how_many_text_deltas_a_turn_took_and_at_what_pace() -> None:
    """At a model's pace each token may be a delta, each a message through every process: the
    report says how many a turn took and the engine's pace (`--env PARLEY_RUNTIME_BUILTIN_PACE_MS`)."""
    cpu, admission = phases(2.0)
    cpu.deltas, cpu.pace_ms = 2400, 20.0
    text = report_text(cpu, admission, [])
    assert "== CPU per turn (text turn, built-in engine, 20 ms before each word, as a model)" in text
    assert "; 2.4 text deltas a turn" in text


def test_the_bench_starts_as_many_edges_as_its_sessions_need_under_the_open_files_limit() -> None:
    """An edge holds two open files per socket: 10,000 sessions need two edges where a process may
    open 20,000 files, one where `parley run` may raise the limit to 65,536."""
    assert edges_for(10_000, 20_000) == 2
    assert edges_for(9_000, 20_000) == 1
    assert edges_for(30_000, 20_000) == 4
    assert edges_for(10_000, 1 << 20) == 1  # parley run raises to 65,536: one holds ~32,000
    assert edges_for(0, 20_000) == 1
    # Unless asked for, the bench's `parley run` gets as many as its --idle needs (0: decided then).
    assert options().parse_args([]).edges == 0 and options().parse_args([]).idle == 10_000
    assert options().parse_args(["--edges", "3"]).edges == 3


def test_the_report_begins_with_this_machines_speed_before_and_after_the_run() -> None:
    cpu, admission = phases(2.0, None)
    out = io.StringIO()
    report(
        latency=[Latency("input_text → first text_delta", [0.1] * 10, [1.0] * 10)],
        cpu=cpu,
        levels=[],
        admission=admission,
        verify=VerifyFigures(bus=[3.0] * 100, client=[0.002] * 100),
        think_ms=1000.0,
        out=out,
        machine=MachineSpeed(before_s=0.45, after_s=0.5),
    )
    head = out.getvalue().splitlines()[:2]
    assert head[0] == "== This machine"
    assert "took 0.45 s of CPU before the run and 0.50 s after it" in head[1]
    assert "0.25 s on the fastest machine recorded, 2.0 times that here at the most" in head[1]
    assert "== This machine" not in report_text(cpu, admission, [])  # not measured: not printed


def test_the_machines_reference_is_the_best_of_its_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 0.01 < reference_s(tries=1) < 10  # the real loop: a tenth of a second or more here
    clock = iter([0.0, 0.5, 1.0, 1.3, 2.0, 2.4])  # three tries: 0.5, 0.3 and 0.4 s
    monkeypatch.setattr(machine.time, "process_time", lambda: next(clock))
    monkeypatch.setattr(machine, "ADDITIONS", 10)
    assert reference_s(tries=3) == pytest.approx(0.3)


def test_pair_runs_both_trees_at_once_or_one_after_the_other_alternating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--one-after-the-other`: a tree's run ends before the other's starts, and which goes first
    alternates from round to round; by default both start together."""
    events: list[str] = []

    class FakeRun:
        def __init__(self, cmd: list[str], **_: object) -> None:
            self.tree = "base" if "--stack-python" in cmd else "this"
            self.figures = Path(cmd[cmd.index("--json") + 1])
            self.returncode = 0
            events.append(f"start {self.tree}")

        def wait(self) -> int:
            self.figures.write_text(json.dumps({"CPU ms per turn": {"whole stack": 1.0}}))
            events.append(f"end {self.tree}")
            return 0

    monkeypatch.setattr(perf_pair.subprocess, "Popen", FakeRun)
    python = sys.executable
    perf_pair._run_both(python, [], tmp_path, 1)
    assert events == ["start base", "start this", "end base", "end this"]
    events.clear()
    perf_pair._run_both(python, [], tmp_path, 1, one_after_the_other=True)
    assert events == ["start base", "end base", "start this", "end this"]
    events.clear()
    base, this = perf_pair._run_both(python, [], tmp_path, 2, one_after_the_other=True)
    assert events == ["start this", "end this", "start base", "end base"]
    assert base == this == {"CPU ms per turn": {"whole stack": 1.0}}
