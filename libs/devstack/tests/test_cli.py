"""Unit parts of `parley run`; the whole command is exercised in tests/e2e/test_devstack.py."""

from __future__ import annotations

import importlib
import json
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from parley_devstack import cli
from parley_devstack.cli import SECRET_NAMES, edge_names, load_secrets, main, module_runnable, service_specs
from parley_devstack.servers import free_port


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / ".parley" / "secrets.json"
    first = load_secrets(path)
    assert set(first) == set(SECRET_NAMES)
    assert all(len(v) >= 40 for v in first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secrets(path) == first  # stable across restarts


def test_missing_secrets_are_added_without_touching_others(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"PARLEY_AUTH_TOKEN_SECRET": "kept"}))
    values = load_secrets(path)
    assert values["PARLEY_AUTH_TOKEN_SECRET"] == "kept"
    assert values["PARLEY_CATALOG_SECRET_KEY"]
    assert json.loads(path.read_text()) == values


def test_module_runnable() -> None:
    assert module_runnable("parley_catalog")
    assert not module_runnable("parley_common")  # a package, but no __main__
    assert not module_runnable("parley_no_such_service")


def test_service_specs_run_the_requested_number_of_workers() -> None:
    names = [s.name for s in service_specs(3, 0, 0)]
    assert names == ["auth", "catalog", "session_gateway", "runtime-1", "runtime-2", "runtime-3"]
    assert {s.module for s in service_specs(1) if s.name.startswith("runtime")} == {"parley_runtime"}


def test_service_specs_run_the_requested_number_of_gateways_on_one_route() -> None:
    gateways = [s for s in service_specs(1, 0, gateways=2) if s.module == "parley_session_gateway"]
    assert [s.name for s in gateways] == ["session_gateway-1", "session_gateway-2"]
    assert {s.route for s in gateways} == {"session_gateway"}


def test_several_edges_are_named_apart_and_one_keeps_its_name() -> None:
    assert edge_names(1) == ["caddy"]
    assert edge_names(3) == ["caddy-1", "caddy-2", "caddy-3"]


def test_service_specs_start_the_speech_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_SPEECH_WORKERS", raising=False)
    assert [s.name for s in service_specs(1) if s.module == "parley_speech"] == ["speech-1"]
    monkeypatch.setenv("PARLEY_SPEECH_WORKERS", "3")
    assert [s.name for s in service_specs(1) if s.module == "parley_speech"] == [
        "speech-1",
        "speech-2",
        "speech-3",
    ]
    monkeypatch.setenv("PARLEY_SPEECH_WORKERS", "0")
    assert [s for s in service_specs(1) if s.module == "parley_speech"] == []


def test_service_specs_start_the_media_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_MEDIA_WORKERS", raising=False)
    media = [s for s in service_specs(1) if s.module == "parley_media"]
    assert [(s.name, s.route) for s in media] == [("media-1", None)]  # not behind the edge
    monkeypatch.setenv("PARLEY_MEDIA_WORKERS", "2")
    assert [s.name for s in service_specs(1) if s.module == "parley_media"] == ["media-1", "media-2"]
    monkeypatch.setenv("PARLEY_MEDIA_WORKERS", "0")
    assert [s for s in service_specs(1) if s.module == "parley_media"] == []


def test_busy_port_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["run", "--port", str(port)]) == 1
    assert f"port {port} is in use" in capsys.readouterr().out
    assert not (tmp_path / ".parley" / "pg").exists()  # nothing was started


def test_a_service_that_cannot_run_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No service is silently left out: a missing entry point fails the start before anything runs."""
    monkeypatch.chdir(tmp_path)
    specs = [cli.ServiceSpec("auth", "parley_auth", None), cli.ServiceSpec("ghost", "parley_no_such", None)]
    monkeypatch.setattr(cli, "service_specs", lambda *_: specs)
    assert main(["run", "--port", str(free_port())]) == 1
    assert "not installed (no `python -m` entry point): parley_no_such" in capsys.readouterr().out
    assert not (tmp_path / ".parley" / "pg").exists()  # nothing was started


def started_by_this_run(process: psutil.Process, before: set[int]) -> bool:
    """Whether `process` is new and none of its ancestors was there before: a long-lived server of
    another test (the `infra` fixture's PostgreSQL) forks processes of its own at any time (a
    backend per connection, an autovacuum worker every minute), and once in CI one came during
    the run. Gone meanwhile: not left over."""
    try:
        return process.pid not in before and not any(a.pid in before for a in process.parents())
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("migrate_code", "main_code", "expected"),
    [
        ("print('boom: schema broken'); raise SystemExit(2)", "", r"fakesvc.migrate failed \(exit code 2\)"),
        (
            "",
            "print('cannot bind', flush=True); raise SystemExit(3)",
            r"fake exited during startup \(code 3\)",
        ),
    ],
    ids=["migration-fails", "service-dies"],
)
def test_startup_failure_is_reported_and_stops_everything(
    pg_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    migrate_code: str,
    main_code: str,
    expected: str,
) -> None:
    name = f"fakesvc_{pg_tmp.name.replace('-', '_')}"  # new per test: no stale import caches
    package = pg_tmp / "src" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrate.py").write_text(migrate_code)
    (package / "__main__.py").write_text(main_code or "import time; time.sleep(60)")
    monkeypatch.syspath_prepend(str(pg_tmp / "src"))
    monkeypatch.setenv("PYTHONPATH", str(pg_tmp / "src"))
    importlib.invalidate_caches()
    monkeypatch.setattr(cli, "MIGRATED_MODULES", (name,))
    monkeypatch.setattr(cli, "service_specs", lambda *_, **__: [cli.ServiceSpec("fake", name, None)])
    handlers = {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}

    # Other tests in the same session may own long-lived servers (the `infra` fixture): only
    # processes this run started must be gone.
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    stack = cli.DevStack(pg_tmp / ".parley", free_port())
    assert stack.run() == 1
    assert {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS} == handlers  # restored
    out = capsys.readouterr().out
    assert re.search(expected.replace("fakesvc", name), out), out
    assert ("boom: schema broken" in out) or ("cannot bind" in out)
    started = [p for p in [*stack.processes, *stack.migrations] if p.pid is not None]
    assert {p.name for p in started} >= {"nats", "valkey", "postgres"}
    assert all(p.returncode is not None for p in started)
    assert not [p for p in psutil.Process().children(recursive=True) if started_by_this_run(p, before)]


def test_a_process_forked_by_a_server_that_was_there_before_is_not_the_runs() -> None:
    # A server of another test (here a shell), there before the run, forks during it; a process
    # the run starts is the run's.
    server = subprocess.Popen(["sh", "-c", "sleep 0.3; sleep 30 & wait"])
    try:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        time.sleep(1)
        (forked,) = psutil.Process(server.pid).children()
        assert forked.pid not in before and not started_by_this_run(forked, before)
        own = subprocess.Popen(["sleep", "30"])
        try:
            assert started_by_this_run(psutil.Process(own.pid), before)
        finally:
            own.kill()
            own.wait()
    finally:
        for child in psutil.Process(server.pid).children():
            child.kill()
        server.kill()
        server.wait()
