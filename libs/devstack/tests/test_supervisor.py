"""The supervisor of `parley run` restarts real child processes with backoff and gives up on a crash
loop; the whole command is exercised in tests/e2e/test_devstack.py (a SIGKILLed runtime worker)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from parley_devstack.servers import ManagedProcess, stop_all
from parley_devstack.supervisor import Event, RestartPolicy, Supervisor

FAST = RestartPolicy(initial_delay_s=0.05, max_delay_s=0.4, stable_after_s=30, crash_loop_exits=5)


def run_until(supervisor: Supervisor, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        supervisor.tick()
        time.sleep(0.01)


def test_policy_backs_off_exponentially_up_to_a_cap() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=30)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_a_killed_process_is_restarted_and_appends_to_its_log(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    code = "import os, time; print('up', os.getpid(), flush=True); time.sleep(60)"
    proc = ManagedProcess("sleeper", [sys.executable, "-c", code], log_path=log)
    events: list[Event] = []
    supervisor = Supervisor(lambda _, e: events.append(e), FAST)
    proc.start()
    try:
        supervisor.watch([proc])
        first = proc.pid
        assert first is not None
        run_until(supervisor, lambda: f"up {first}" in log.read_text())
        os.kill(first, signal.SIGKILL)
        run_until(supervisor, lambda: proc.alive() and proc.pid != first)
        second = proc.pid
        run_until(supervisor, lambda: f"up {second}" in log.read_text())
        assert [(e.kind, e.code) for e in events] == [("exited", -signal.SIGKILL), ("restarted", -9)]
        assert events[0].delay_s == FAST.initial_delay_s
        assert supervisor.restarts == {"sleeper": 1} and not supervisor.given_up
        assert f"up {first}" in log.read_text()  # the crashed run's output is kept
    finally:
        stop_all([proc], timeout=5)


def test_a_crash_loop_is_given_up_with_growing_delays(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "broken", [sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "broken.log"
    )
    events: list[Event] = []
    supervisor = Supervisor(lambda _, e: events.append(e), FAST)
    proc.start()
    try:
        supervisor.watch([proc])
        run_until(supervisor, lambda: "broken" in supervisor.given_up)
        kinds = [e.kind for e in events]
        assert kinds == ["exited", "restarted"] * 4 + ["gave_up"]
        delays = [e.delay_s for e in events if e.kind == "exited"]
        assert delays == [0.05, 0.1, 0.2, 0.4]
        assert supervisor.restarts == {"broken": 4} and supervisor.given_up == {"broken": 3}
        assert events[-1].code == 3
        supervisor.tick()
        assert not proc.alive() and len(events) == 9  # left down: no more restarts
    finally:
        stop_all([proc], timeout=5)


def test_backoff_starts_over_after_a_stable_run(tmp_path: Path) -> None:
    """Exits far apart are not a loop: a process that ran `stable_after_s` restarts at the first delay."""
    now = [0.0]
    proc = ManagedProcess("flaky", [sys.executable, "-c", "raise SystemExit(1)"])
    events: list[Event] = []
    policy = RestartPolicy(initial_delay_s=1, max_delay_s=60, stable_after_s=10, crash_loop_exits=3)
    supervisor = Supervisor(lambda _, e: events.append(e), policy, clock=lambda: now[0])
    proc.start()
    try:
        supervisor.watch([proc])
        for _ in range(6):  # six exits, each after a stable run: never a crash loop
            assert proc.proc is not None
            proc.proc.wait()
            now[0] += 100
            supervisor.tick()  # exited: restart scheduled
            now[0] += 1
            supervisor.tick()  # restarted
        assert [e.delay_s for e in events if e.kind == "exited"] == [1] * 6
        assert not supervisor.given_up and supervisor.restarts == {"flaky": 6}
    finally:
        stop_all([proc], timeout=5)


def test_a_process_that_cannot_be_spawned_counts_as_crashing(tmp_path: Path) -> None:
    binary = tmp_path / "server"
    binary.write_text("#!/bin/sh\nexit 2\n")
    binary.chmod(0o755)
    proc = ManagedProcess("gone", [binary])
    events: list[Event] = []
    supervisor = Supervisor(lambda _, e: events.append(e), FAST)
    proc.start()
    try:
        supervisor.watch([proc])
        binary.unlink()  # e.g. the package was uninstalled under the running stack
        run_until(supervisor, lambda: "gone" in supervisor.given_up)
        assert events[-1].kind == "gave_up"
        assert events[-1].detail is not None and "No such file" in events[-1].detail
        assert supervisor.restarts == {"gone": 0}
    finally:
        stop_all([proc], timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_restart_refuses_a_running_process(tmp_path: Path, signum: int) -> None:
    proc = ManagedProcess("x", [sys.executable, "-c", "import time; time.sleep(60)"])
    proc.start()
    try:
        with pytest.raises(Exception, match="still running"):
            proc.restart()
        proc.signal(signum)
        assert proc.proc is not None
        proc.proc.wait(10)
        proc.restart()
        assert proc.alive()
    finally:
        stop_all([proc], timeout=5)
