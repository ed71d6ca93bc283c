# One piece (573 lines): `parley run` is one supervisor: start order, restarts and shutdown act on
# the same process table and state directory; the servers themselves are in servers/postgres/edge.
"""`parley run`: the whole platform on one machine, from PyPI wheels only (what `make run` starts).

State lives in `.parley/` of the current directory and survives restarts: NATS JetStream, Valkey
(append-only file) and PostgreSQL data, the generated secrets, the dev mail sink, and one log file
per process. Startup order: NATS, Valkey and PostgreSQL (in parallel) → the `parley` database →
each service's migrations (in parallel) → the services, each as its own process (one without a
schema starts while the migrations run; one with a schema right after its own) → the edge
(edge-meta and Caddy); then it waits until the edge's /readyz says every service is ready.
With `--traces`, a local trace viewer (`parley_devstack.traceview`) starts before the services,
every service exports its spans to it over OTLP, and the edge serves it at `/traces`.

A child that dies while the platform runs is started again with exponential backoff
(`parley_devstack.supervisor`): each exit and restart is printed and appended to
`.parley/logs/supervisor.log`, and counted in `.parley/run.json`, which edge-meta serves as
`parley_devstack_restarts_total{process}` on its /metrics. A child caught in a crash loop is left
down with the tail of its log, the rest keeps running (the edge's /readyz names what is missing),
and the final exit status is then 1. Ctrl-C or SIGTERM stops everything it started: services, then
the edge, then the infrastructure. A second Ctrl-C skips the graceful wait.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from parley_devstack.edge import CaddyServer
from parley_devstack.postgres import PostgresServer, create_database
from parley_devstack.servers import (
    DESCRIPTORS,
    LOOPBACK,
    Cancelled,
    ManagedProcess,
    NatsServer,
    ServerError,
    ValkeyServer,
    free_port,
    port_is_free,
    raise_descriptor_limit,
    stop_all,
    tail,
)
from parley_devstack.supervisor import Event, RestartPolicy, Supervisor

DEFAULT_PORT = 8080
DATABASE = "parley"
# Generated once per install into .parley/secrets.json and given to every service.
SECRET_NAMES = ("PARLEY_AUTH_TOKEN_SECRET", "PARLEY_CATALOG_SECRET_KEY")
# Services whose schema is migrated (`python -m <module>.migrate`) before the service starts; a
# failed migration aborts the start.
MIGRATED_MODULES = ("parley_auth", "parley_catalog")
READY_TIMEOUT_S = 120.0
INFRA_TIMEOUT_S = 60.0
MIGRATE_TIMEOUT_S = 120.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # process, log file and edge peer name
    module: str  # run as `python -m <module>`
    route: str | None  # owner name in the edge routing table, None if not behind the edge


def process_names(name: str, count: int) -> list[str]:
    """One process keeps its plain name; several of the same kind are numbered `name-1` … `name-N`
    (their log files, directories and edge peers follow)."""
    return [name] if count <= 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def speech_workers() -> int:
    """Speech worker processes (`PARLEY_SPEECH_WORKERS`, default 1): CPU-bound, so one per spare
    core at most."""
    try:
        return max(int(os.environ.get("PARLEY_SPEECH_WORKERS", "1")), 0)
    except ValueError:
        return 1


def media_workers() -> int:
    """WebRTC media worker processes (`PARLEY_MEDIA_WORKERS`, default 1): each holds many calls."""
    try:
        return max(int(os.environ.get("PARLEY_MEDIA_WORKERS", "1")), 0)
    except ValueError:
        return 1


def service_specs(
    workers: int, speech: int | None = None, media: int | None = None, gateways: int = 1
) -> list[ServiceSpec]:
    specs = [
        ServiceSpec("auth", "parley_auth", "auth"),
        ServiceSpec("catalog", "parley_catalog", "catalog"),
    ]
    # Several gateways share the edge's gateway routes (Caddy balances new connections over them).
    specs += [
        ServiceSpec(name, "parley_session_gateway", "session_gateway")
        for name in process_names("session_gateway", gateways)
    ]
    specs += [ServiceSpec(f"runtime-{i}", "parley_runtime", None) for i in range(1, workers + 1)]
    # The speech pool (VAD, STT, TTS), scaled apart from the runtime workers.
    count = speech_workers() if speech is None else speech
    specs += [ServiceSpec(f"speech-{i}", "parley_speech", None) for i in range(1, count + 1)]
    # The WebRTC media pool (docs/webrtc.md): browsers' peer connections, bridged to /realtime.
    count = media_workers() if media is None else media
    specs += [ServiceSpec(f"media-{i}", "parley_media", None) for i in range(1, count + 1)]
    return specs


def module_runnable(module: str) -> bool:
    """True if `python -m module` can run (a package with a `__main__`)."""
    try:
        return importlib.util.find_spec(module) is not None and (
            importlib.util.find_spec(f"{module}.__main__") is not None
        )
    except (ImportError, ValueError):
        return False


def load_secrets(path: Path) -> dict[str, str]:
    """Read the install's secrets, generating (and persisting, mode 600) any that are missing."""
    values: dict[str, str] = {}
    if path.exists():
        values = {k: str(v) for k, v in json.loads(path.read_text()).items()}
    missing = [name for name in SECRET_NAMES if not values.get(name)]
    if missing:
        values.update({name: secrets.token_urlsafe(32) for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh, indent=2)
        tmp.replace(path)
    return values


class StartupError(Exception):
    pass


def edge_names(edges: int) -> list[str]:
    """The edge's Caddy processes: several share the port (CaddyServer), each with a name, a
    directory and a log of its own."""
    return process_names("caddy", edges)


def say(message: str = "") -> None:
    # The terminal may be gone (SIGHUP); shutting down matters more than telling about it.
    with contextlib.suppress(OSError):
        print(message, flush=True)


def fresh_log(path: Path) -> Path:
    """Keep the previous run's log as `<name>.log.1`, so a crash before a restart stays readable."""
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))
    return path


class DevStack:
    def __init__(
        self,
        home: Path,
        port: int,
        workers: int = 2,
        *,
        gateways: int = 1,
        edges: int = 1,
        nats_nodes: int = 1,
        traces: bool = False,
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        self.home = home.resolve()
        self.port = port
        self.workers = workers
        self.gateways = gateways
        self.edges = edges
        self.nats_nodes = nats_nodes
        self.traces = traces
        self.logs = self.home / "logs"
        self.mail = self.home / "mail"
        self.url = f"http://{LOOPBACK}:{port}"
        self.infra: list[ManagedProcess] = []
        self.migrations: list[ManagedProcess] = []
        self.services: list[ManagedProcess] = []
        self.edge: list[ManagedProcess] = []
        self.specs: list[ServiceSpec] = []
        self.ports: dict[str, int] = {}
        self.supervisor = Supervisor(self._report, restart_policy)
        self.descriptors = DESCRIPTORS  # the open-files limit in force, once `run` has raised it
        self._stop = threading.Event()
        self._signals = 0
        self._first_signal = 0.0
        self._hurry = False
        self._lock: IO[str] | None = None

    # -------------------------------------------------------------------------------- control

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        self._signals += 1
        now = time.monotonic()
        if self._signals == 1:
            self._first_signal = now
            say(f"\nparley: {signal.Signals(signum).name} received, stopping (again to force)")
        elif now - self._first_signal > 0.5:
            # Only a deliberate second Ctrl-C: a wrapper (uv run, make) may relay the first one
            # while the terminal also delivers it.
            self._hurry = True
        self._stop.set()

    def cancelled(self) -> bool:
        return self._stop.is_set()

    def hurry(self) -> bool:
        return self._hurry

    @property
    def processes(self) -> list[ManagedProcess]:
        """The long-running ones (not the migrations)."""
        return [*self.infra, *self.services, *self.edge]

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self.request_stop) for sig in STOP_SIGNALS}
        started = time.monotonic()
        try:
            self._acquire_lock()
            self.descriptors = raise_descriptor_limit()
            self.start()
            self.summary(time.monotonic() - started)
            return self.supervise()
        except Cancelled:
            say("parley: startup interrupted")
            return 130
        except (StartupError, ServerError) as exc:
            say(f"parley: {exc}")
            return 1
        except Exception:
            say("parley: unexpected error, stopping")
            traceback.print_exc()
            return 1
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _acquire_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lock = (self.home / "run.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise StartupError(f"another `parley run` (pid {owner}) is using {self.home}") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    # -------------------------------------------------------------------------------- startup

    def start(self) -> None:
        if not port_is_free(self.port):
            raise StartupError(f"port {self.port} is in use; choose another with --port or PARLEY_PORT")
        # Every service is part of the platform: one that cannot run is an install to repair, not
        # a service to leave out.
        missing = sorted({s.module for s in service_specs(self.workers) if not module_runnable(s.module)})
        if missing:
            raise StartupError(
                f"not installed (no `python -m` entry point): {', '.join(missing)}; run make install"
            )
        for sub in ("logs", "mail", "caddy"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        fresh_log(self.logs / "supervisor.log")
        env_secrets = load_secrets(self.home / "secrets.json")

        # Infrastructure: NATS and Valkey boot while initdb (first run only) works.
        nats = NatsServer(self.home / "nats", log_path=fresh_log(self.logs / "nats.log"))
        peers: list[NatsServer] = []
        if self.nats_nodes > 1:
            # A cluster on loopback: every node routes to the others; clients connect to the first
            # and learn the others from it (they fail over to them).
            cluster_ports = [free_port() for _ in range(self.nats_nodes)]
            nodes = [
                NatsServer(
                    self.home / ("nats" if i == 0 else f"nats-{i + 1}"),
                    name="nats" if i == 0 else f"nats-{i + 1}",
                    cluster_port=cluster_ports[i],
                    routes=[p for j, p in enumerate(cluster_ports) if j != i],
                    log_path=fresh_log(self.logs / ("nats.log" if i == 0 else f"nats-{i + 1}.log")),
                )
                for i in range(self.nats_nodes)
            ]
            nats, peers = nodes[0], nodes[1:]
        valkey = ValkeyServer(
            self.home / "valkey", persistent=True, log_path=fresh_log(self.logs / "valkey.log")
        )
        pg = PostgresServer(
            self.home / "pg" / "data", durable=True, log_path=fresh_log(self.logs / "postgres.log")
        )
        self.ports.update(nats=nats.port, valkey=valkey.port, postgres=pg.port)
        self.ports.update({peer.name: peer.port for peer in peers})
        for early in (nats, *peers, valkey):
            self.infra.append(early)
            early.start()
        if not pg.initialized:
            say("parley: first run, creating the PostgreSQL cluster")
        pg.init(cancel=self.cancelled)
        self.infra.append(pg)
        pg.start()
        self._record()
        for server in (nats, *peers, valkey, pg):
            server.wait_ready(INFRA_TIMEOUT_S, cancel=self.cancelled)
        create_database(pg.url(), DATABASE)

        env = {
            **os.environ,
            "NATS_URL": nats.url,
            "REDIS_URL": valkey.url,
            "DATABASE_URL": pg.url(DATABASE),
            "PARLEY_HTTP_HOST": LOOPBACK,
            "PARLEY_PUBLIC_URL": self.url,
            "PARLEY_DOCS_URL": f"{self.url}/errors",
            "PARLEY_AUTH_MAIL_DIR": str(self.mail),
            "PARLEY_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            **env_secrets,
        }
        if peers:  # every stream Parley creates keeps a copy on each node (unless told otherwise)
            env.setdefault("PARLEY_JETSTREAM_REPLICAS", str(min(self.nats_nodes, 3)))
        env.pop("PARLEY_HTTP_PORT", None)
        if self.traces:
            # Before the services, so their first spans have somewhere to go.
            env["PARLEY_OTLP_ENDPOINT"] = self._start_traceview(env)

        specs = self.specs = service_specs(self.workers, gateways=self.gateways)

        # Ports first, so the edge can be configured before every service runs.
        for spec in specs:
            self.ports[spec.name] = free_port()
        self.ports["edge_meta"] = free_port()
        gateway = next((s.name for s in specs if s.module == "parley_session_gateway"), None)
        if gateway is not None:
            # Media workers open a gateway's own /realtime (the first one's), not the edge's.
            env["PARLEY_MEDIA_GATEWAY_URL"] = f"ws://{LOOPBACK}:{self.ports[gateway]}/realtime"
        migrations = {
            m: self._migration(m, env) for m in MIGRATED_MODULES if any(s.module == m for s in specs)
        }
        # Services without a schema start at once and import while the migrations run; the others
        # start as soon as their own migration is done.
        for spec in specs:
            if spec.module not in migrations:
                self._start_service(spec, env)
        self._start_edge(specs, env)
        self._finish_migrations(migrations, specs, env)
        self.wait_edge_ready()

    def _start_service(self, spec: ServiceSpec, env: dict[str, str]) -> None:
        proc = ManagedProcess(
            spec.name,
            [sys.executable, "-m", spec.module],
            env={**env, "PARLEY_HTTP_PORT": str(self.ports[spec.name])},
            log_path=fresh_log(self.logs / f"{spec.name}.log"),
        )
        self.services.append(proc)
        proc.start()
        self._record()

    def _start_traceview(self, env: dict[str, str]) -> str:
        """Start the trace viewer; returns its base URL, the services' OTLP endpoint."""
        port = self.ports["traceview"] = free_port()
        url = f"http://{LOOPBACK}:{port}"
        viewer = ManagedProcess(
            "traceview",
            [sys.executable, "-m", "parley_devstack.traceview"],
            env={**env, "PARLEY_HTTP_PORT": str(port)},
            log_path=fresh_log(self.logs / "traceview.log"),
        )
        viewer.probe = lambda: _answers(f"{url}/healthz")  # type: ignore[method-assign]
        # With the edge: stopped after the services, so their last spans are still received.
        self.edge.append(viewer)
        viewer.start()
        self._record()
        return url

    def _start_edge(self, specs: list[ServiceSpec], env: dict[str, str]) -> None:
        peers = {s.name: f"http://{LOOPBACK}:{self.ports[s.name]}" for s in specs}
        upstreams: dict[str, str] = {}
        for s in specs:
            if s.route is not None:  # several processes of one route: a space-separated list
                address = f"{LOOPBACK}:{self.ports[s.name]}"
                upstreams[s.route] = f"{upstreams[s.route]} {address}" if s.route in upstreams else address
        meta = ManagedProcess(
            "edge_meta",
            [sys.executable, "-m", "parley_devstack.edge_meta"],
            env={
                **env,
                "PARLEY_HTTP_PORT": str(self.ports["edge_meta"]),
                "PARLEY_EDGE_PEERS": ",".join(f"{n}={u}" for n, u in peers.items()),
                # Restart counts of the supervisor, served as parley_devstack_restarts_total.
                "PARLEY_EDGE_RUN_STATE": str(self.home / "run.json"),
            },
            log_path=fresh_log(self.logs / "edge_meta.log"),
        )
        self.edge.append(meta)
        meta.start()
        upstreams["edge_meta"] = f"{LOOPBACK}:{self.ports['edge_meta']}"
        if "traceview" in self.ports:
            upstreams["traceview"] = f"{LOOPBACK}:{self.ports['traceview']}"
        for name in edge_names(self.edges):
            caddy = CaddyServer(
                self.home / name,
                port=self.port,
                upstreams=upstreams,
                fallback=upstreams["edge_meta"],
                docs_url=env["PARLEY_DOCS_URL"],
                log_path=fresh_log(self.logs / f"{name}.log"),
                name=name,
            )
            self.edge.append(caddy)
            caddy.start()
        self.ports["caddy"] = self.port
        self._record()

    def _migration(self, module: str, env: dict[str, str]) -> ManagedProcess:
        # Each service migrates its own schema (and version table), so they run side by side.
        proc = ManagedProcess(
            f"{module}.migrate",
            [sys.executable, "-m", f"{module}.migrate"],
            env=env,
            log_path=fresh_log(self.logs / f"migrate-{module}.log"),
        )
        self.migrations.append(proc)
        proc.start()
        return proc

    def _finish_migrations(
        self, migrations: dict[str, ManagedProcess], specs: list[ServiceSpec], env: dict[str, str]
    ) -> None:
        """Start each migrated service as soon as its migration succeeds; abort on a failure.
        (Migrations still running on an abort are stopped by `shutdown`.)"""
        pending = dict(migrations)
        deadline = time.monotonic() + MIGRATE_TIMEOUT_S
        while pending:
            if self.cancelled():
                raise Cancelled("migrations")
            for module, proc in list(pending.items()):
                code = proc.returncode
                if code is None:
                    continue
                del pending[module]
                proc.close_log()
                if code != 0:
                    raise StartupError(f"{proc.name} failed (exit code {code}):\n{tail(proc.log_path, 60)}")
                for spec in specs:
                    if spec.module == module:
                        self._start_service(spec, env)
            if pending and time.monotonic() > deadline:
                raise StartupError(
                    f"{next(iter(pending.values())).name} did not finish in {MIGRATE_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.05)

    def wait_edge_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last: dict[str, object] = {}
        with httpx.Client(timeout=3.0) as client:
            while True:
                if self.cancelled():
                    raise Cancelled("edge")
                for proc in self.processes:
                    if not proc.alive():
                        raise StartupError(
                            f"{proc.name} exited during startup (code {proc.returncode}); "
                            f"{_rel(proc.log_path)}:\n{tail(proc.log_path)}"
                        )
                try:
                    response = client.get(f"{self.url}/readyz")
                    if response.status_code == 200 and all(p.probe() for p in self.edge):
                        return
                    last = response.json()
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        reported = last.get("not_ready")
        not_ready = [str(n) for n in reported] if isinstance(reported, list) else [p.name for p in self.edge]
        services = last.get("services")
        lines = [f"not ready after {READY_TIMEOUT_S:.0f}s: {', '.join(not_ready)}"]
        for name in not_ready:
            reason = services.get(name) if isinstance(services, dict) else None
            log = self.logs / f"{name}.log"
            lines += [f"--- {name}: {reason or 'not ready'} ({_rel(log)})", tail(log, 20)]
        raise StartupError("\n".join(lines))

    def _record(self) -> None:
        """`.parley/run.json`: what runs where, for humans and for tests."""
        state = {
            "pid": os.getpid(),
            "url": self.url,
            "processes": {p.name: {"pid": p.pid, "port": self.ports.get(p.name)} for p in self.processes},
            "restarts": self.supervisor.restarts,
            "given_up": sorted(self.supervisor.given_up),
        }
        path = self.home / "run.json"
        path.with_suffix(".tmp").write_text(json.dumps(state, indent=2))
        path.with_suffix(".tmp").replace(path)

    def summary(self, elapsed: float) -> None:
        infra = {p.name: p for p in self.infra}
        nats, valkey, pg = infra["nats"], infra["valkey"], infra["postgres"]
        assert isinstance(nats, NatsServer) and isinstance(valkey, ValkeyServer)
        assert isinstance(pg, PostgresServer)
        say()
        say(f"Parley is running at {self.url}   (ready in {elapsed:.1f}s)")
        say(f"  API docs     {self.url}/docs   (OpenAPI: {self.url}/openapi.json)")
        say(f"  services     {', '.join(s.name for s in self.specs)}")
        say(f"  logs         {_rel(self.logs)}/<process>.log")
        say(f"  dev mail     {_rel(self.mail)}/ (outgoing mail is written here as .eml files)")
        if self.traces:
            say(f"  traces       {self.url}/traces")
        say(f"  infra        {nats.url}  {valkey.url}  {pg.url(DATABASE)}")
        if self.descriptors < DESCRIPTORS:
            say(
                f"  note         open files are limited to {self.descriptors} here (ulimit -Hn): an edge"
                f" process holds two per WebSocket, so at most ~{self.edges * (self.descriptors // 2 - 100)}"
                " sessions at once (--edges N: N times as many)"
            )
        say("Press Ctrl-C to stop.")

    # ------------------------------------------------------------------------------ supervision

    def supervise(self) -> int:
        """Restart what dies until Ctrl-C; 1 if a process had to be given up (a crash loop)."""
        self.supervisor.watch(self.processes)
        self._record()
        while not self._stop.wait(0.2):
            if self.supervisor.tick():
                self._record()
        return 1 if self.supervisor.given_up else 0

    def _report(self, name: str, event: Event) -> None:
        proc = next(p for p in self.processes if p.name == name)
        code = "?" if event.code is None else event.code
        if event.kind == "exited":
            why = f" ({event.detail})" if event.detail else ""
            say(
                f"parley: {name} exited unexpectedly (code {code}){why}; restarting it in "
                f"{event.delay_s:g}s; last lines of {_rel(proc.log_path)}:\n{tail(proc.log_path, 20)}"
            )
        elif event.kind == "restarted":
            say(f"parley: {name} restarted (pid {proc.pid}, restart {event.restarts})")
        else:
            policy = self.supervisor.policy
            why = f"; last attempt: {event.detail}" if event.detail else ""
            say(
                f"parley: {name} is crash-looping ({policy.crash_loop_exits} exits within "
                f"{policy.crash_loop_window_s:g}s, last code {code}{why}); giving up on it. "
                f"Last lines of {_rel(proc.log_path)}:\n{tail(proc.log_path, 30)}"
            )
            say(f"parley: the rest keeps running; {self.url}/readyz reports what is missing")
            self._record()
        line = {"time": time.time(), "event": f"process.{event.kind}", "process": name, "code": event.code}
        line.update(restarts=event.restarts, delay_s=event.delay_s, detail=event.detail)
        with contextlib.suppress(OSError), (self.logs / "supervisor.log").open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    def shutdown(self) -> None:
        if not any(p.proc is not None for p in [*self.processes, *self.migrations]):
            self._release()
            return
        groups = ((self.migrations + self.services, 15.0), (self.edge, 5.0), (self.infra, 20.0))
        for group, timeout in groups:
            stop_all(group, timeout, hurry=self.hurry)
        with contextlib.suppress(OSError):
            (self.home / "run.json").unlink()
        self._release()
        say("parley: stopped")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _rel(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley", description="Parley developer tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the whole platform locally on the embedded stack")
    run.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PARLEY_PORT", DEFAULT_PORT)),
        help="port of the edge on 127.0.0.1 (default: $PARLEY_PORT or 8080)",
    )
    run.add_argument(
        "--data-dir", type=Path, default=Path(".parley"), help="state directory (default: .parley)"
    )
    run.add_argument("--workers", type=int, default=2, help="number of runtime worker processes (default: 2)")
    run.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="number of session gateway processes behind the edge (default: 1)",
    )
    run.add_argument(
        "--edges",
        type=int,
        default=1,
        help="number of Caddy processes sharing the edge's port; Linux spreads new connections"
        " over them (default: 1)",
    )
    run.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="run NATS as an N-node cluster on loopback, streams with min(N, 3) replicas (default: 1 node)",
    )
    run.add_argument(
        "--traces",
        action="store_true",
        help="export every service's spans to a local trace viewer, served at /traces on the edge",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return DevStack(
            args.data_dir,
            args.port,
            max(1, args.workers),
            gateways=max(1, args.gateways),
            edges=max(1, args.edges),
            nats_nodes=max(1, args.nats_cluster),
            traces=args.traces,
        ).run()
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
