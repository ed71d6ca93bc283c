"""`bench.perf`'s stack: `parley run` started as a child process, its processes by name and
group, and the small requests the phases make of it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx
import psutil

from bench import realtime
from parley_devstack.servers import DESCRIPTORS, free_port

# Processes of `parley run` grouped as the report shows them.
GROUPS = {
    "nats": "nats-server",
    "valkey": "redis (valkey)",
    "postgres": "postgres",
    "caddy": "caddy",
    "edge_meta": "edge-meta",
    "auth": "auth",
    "catalog": "catalog",
}


# Processes of the stack that are not Python services (no cProfile hook, no Parley /metrics).
NOT_PYTHON = ("nats", "valkey", "postgres", "caddy")


def group_of(name: str) -> str:
    if name.startswith("nats"):
        return "nats-server"  # every node of a cluster
    if name.startswith("runtime-"):
        return "runtime (all workers)"
    if name.startswith("session_gateway"):
        return "gateway"
    if name.startswith("caddy"):
        return "caddy"  # every edge process (`--edges N`)
    return GROUPS.get(name, name)


# ------------------------------------------------------------------------------------ the stack


class Stack:
    """`parley run` as a child process; its processes as psutil handles by name."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int,
        extra_env: dict[str, str],
        profile_dir: Path | None = None,
        gateways: int = 1,
        nats_nodes: int = 1,
        edges: int = 1,
        python: str = sys.executable,
    ) -> None:
        self.python = python  # another checkout's interpreter runs that checkout's services
        self.gateways = gateways
        self.edges = edges
        self.nats_nodes = nats_nodes
        self.home = workdir / "parley"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_RUNTIME_BUILTIN_PACE_MS="0",
            PARLEY_SPEECH_WORKERS="0",
            # Thousands of sessions from one address and one key, faster than a person types.
            PARLEY_GATEWAY_INPUT_RATE_PER_S="100000",
            PARLEY_GATEWAY_INPUT_BURST="100000",
            PARLEY_AUTH_RATE_SIGNUP_IP="1000/minute",
            PARLEY_GATEWAY_HANDSHAKE_QUEUE_S="30",
        )
        env.update(extra_env)
        if profile_dir is not None:
            hook = str(Path(__file__).parent / "_profile_hook")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [hook, env.get("PYTHONPATH")]))
            env["PARLEY_BENCH_PROFILE_DIR"] = str(profile_dir)
        self.env = env
        self.workers = workers
        self.log = workdir / "parley-run.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.processes: dict[str, psutil.Process] = {}
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 240.0) -> None:
        cmd = [self.python, "-m", "parley_devstack", "run", "--data-dir", str(self.home)]
        cmd += ["--port", str(self.port), "--workers", str(self.workers), "--gateways", str(self.gateways)]
        cmd += ["--nats-cluster", str(self.nats_nodes)]
        if self.edges != 1:  # asked only then: a base checkout's `parley run` may predate the option
            cmd += ["--edges", str(self.edges)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"parley run exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            if "Parley is running" in self.log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"parley run not ready in {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")
        state = json.loads((self.home / "run.json").read_text())
        for name, info in state["processes"].items():
            self.processes[name] = psutil.Process(info["pid"])
            if info.get("port"):
                self.ports[name] = int(info["port"])

    def toggle_profiles(self, phase: str | None = None) -> None:
        """Start cProfile in every Python process (`--profile`), or with `phase`, stop it and file
        the profiles written under `DIR/<phase>/`."""
        where = self.env.get("PARLEY_BENCH_PROFILE_DIR")
        if where is None:
            return
        for name, proc in self.processes.items():
            if not name.startswith(NOT_PYTHON):
                with suppress(psutil.Error):
                    proc.send_signal(signal.SIGUSR2)
        if phase is not None:
            time.sleep(2.0)  # the processes write their profiles
            (Path(where) / phase).mkdir(exist_ok=True)
            for written in Path(where).glob("*.prof"):
                written.replace(Path(where) / phase / written.name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _summed(self, measure: Callable[[psutil.Process], float], by_process: bool) -> dict[str, float]:
        """`measure` summed over each process and its children, by group or by process (a process
        gone meanwhile counts what could still be read)."""
        out: dict[str, float] = {}
        for name, proc in self.processes.items():
            total = 0.0
            with suppress(psutil.Error):
                for p in [proc, *proc.children(recursive=True)]:
                    with suppress(psutil.Error):
                        total += measure(p)
            key = name if by_process else group_of(name)
            out[key] = out.get(key, 0.0) + total
        return out

    def cpu(self, by_process: bool = False) -> dict[str, float]:
        """CPU seconds used so far by each group, or each process (children included, reaped or
        live)."""

        return self._summed(cpu_seconds, by_process)

    def gauge(self, name: str, metric: str) -> float:
        """The sum of a metric's samples on a process's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(metric))

    def gc_seconds(self) -> dict[str, float]:
        """Seconds each group of Python processes has spent in the garbage collector so far (their
        `parley_gc_seconds_total`; a tree without the metric reads 0)."""
        out: dict[str, float] = {}
        for name in self.ports:
            if name.startswith(NOT_PYTHON):
                continue
            group = group_of(name)
            with suppress(httpx.HTTPError):
                out[group] = out.get(group, 0.0) + self.gauge(name, "parley_gc_seconds_total{")
        return out

    def spread_of(self) -> dict[str, float]:
        """Client sockets per edge process (of several), realtime sockets per gateway, sessions per
        runtime worker."""
        out: dict[str, float] = {}
        for name, proc in self.processes.items():
            if name.startswith("caddy-"):
                out[name] = float(client_sockets(proc, self.port))
            elif name.startswith("session_gateway"):
                out[name] = self.gauge(name, 'parley_ws_connections_active{protocol="realtime"}')
            elif name.startswith("runtime-"):
                out[name] = self.gauge(name, "parley_sessions_active")
        return out

    def memory(self) -> dict[str, float]:
        """Resident bytes of each group (a process with its children), each process's proportional
        set size: a page several processes map counts a share in each. RSS would count it whole in
        each, and PostgreSQL's backends all map the shared buffers the catalog's writes touch
        (docs/performance.md, "Memory: proportional, not resident"). RSS where PSS is unreadable."""
        return self._summed(proportional_bytes, by_process=False)


def cpu_seconds(p: psutil.Process) -> float:
    """A process's CPU seconds so far: user and system, its reaped children's included."""
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def proportional_bytes(p: psutil.Process) -> float:
    """`p`'s proportional set size (Linux's smaps), or its RSS where that is not readable."""
    try:
        return float(p.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return float(p.memory_info().rss)


def edges_for(sessions: int, open_files: int | None = None) -> int:
    """Edge processes enough to hold `sessions` sockets: one holds two open files per socket, and
    `parley run` raises its limit at most to the hard one (`open_files`, default this process's)."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if open_files == resource.RLIM_INFINITY:
        return 1
    per_edge = max(1, min(open_files, DESCRIPTORS) // 2 - 100)  # listeners, logs, the upstreams' idle
    return max(1, -(-sessions // per_edge))


def client_sockets(proc: psutil.Process, port: int) -> int:
    """The connections `proc` has accepted on `port` that are still established."""
    try:
        conns = proc.net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def bus_requests(port: int, subject: str) -> float:
    """How many bus requests on `subject` a service has sent (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    needle = f'parley_bus_request_seconds_count{{subject="{subject}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(needle))


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


async def publish_agent(url: str) -> tuple[str, str]:
    """A new user's API key and a live agent of theirs (START greeting → DIALOG forever)."""

    class Edge:
        def url(self, _name: str) -> str:
            return url

    return await realtime.publish_agent(Edge())  # type: ignore[arg-type]
