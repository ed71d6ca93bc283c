"""A realtime stack whose NATS and Redis the test itself kills and restarts (fault tests).

The topology of test_realtime's `stack`, with every service a process of its own (auth, catalog,
the session gateway and two runtime workers), so the test process only plays the clients: a burst
of a thousand of them does not slow down the services under test. The stack has its own NATS and
its own Redis (a Valkey, append-only with fsync at every write, so a SIGKILL loses nothing that was
acknowledged); both can be killed and started again on the same port with the same data directory,
as a crash and an operator's restart would. The runtime's claim timing is left at its defaults
unless a module says otherwise, since its interplay with an outage is what these tests are about.

The helpers of test_realtime (`signup`, `make_agent`, `transcript`, …) call `stack.http(stack.auth)`:
here `auth` and `catalog` are the services' base URLs, and `http()` talks to them over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from tests.e2e.harness import NO_LIMIT, PACE_MS, Stack, ready

from parley_auth.migrate import upgrade as upgrade_auth
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_devstack.postgres import create_database, drop_database, with_database
from parley_devstack.servers import ManagedProcess, NatsServer, ValkeyServer, free_port, stop_all

GRACE_S = 20.0  # reconnect grace of the runtime workers: longer than any outage here


@dataclass
class FaultStack(Stack):
    nats: NatsServer | None = None
    valkey: ValkeyServer | None = None
    root: Path = Path()
    services: list[ManagedProcess] = field(default_factory=list)

    def http(self, app: Any, **kwargs: Any) -> httpx.AsyncClient:
        """A client of the auth or catalog process (`app` is its base URL here)."""
        return httpx.AsyncClient(base_url=str(app), timeout=30, **kwargs)

    # ------------------------------------------------------------------------------ NATS

    def kill_nats(self) -> None:
        assert self.nats is not None
        self.nats.signal(signal.SIGKILL)
        assert self.nats.proc is not None
        self.nats.proc.wait(10)
        self.nats.close_log()

    async def start_nats(self) -> float:
        """Start NATS again on the same ports and data directory; the time it was ready."""
        old = self.nats
        assert old is not None
        self.nats = NatsServer(
            self.root / "nats", port=old.port, http_port=old.http_port, log_path=self.logs / "nats-2.log"
        )
        self.nats.start()
        await asyncio.to_thread(self.nats.wait_ready, 30)
        return time.monotonic()

    # ------------------------------------------------------------------------------ Redis

    def kill_valkey(self) -> None:
        assert self.valkey is not None
        self.valkey.signal(signal.SIGKILL)
        assert self.valkey.proc is not None
        self.valkey.proc.wait(10)
        self.valkey.close_log()

    async def start_valkey(self) -> float:
        old = self.valkey
        assert old is not None
        self.valkey = _valkey(self.root, old.port, self.logs / "valkey-2.log")
        self.valkey.start()
        await asyncio.to_thread(self.valkey.wait_ready, 30)
        return time.monotonic()

    def log_text(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _valkey(root: Path, port: int | None, log_path: Path) -> ValkeyServer:
    server = ValkeyServer(root / "valkey", port=port, log_path=log_path)
    server.argv += ["--appendfsync", "always"]  # an acknowledged write survives a SIGKILL
    return server


@pytest.fixture(scope="module")
def fault_env() -> dict[str, str]:
    """Extra environment for the gateway and workers; a module overrides it."""
    return {}


def _service(name: str, module: str, port: int, env: dict[str, str], logs: Path) -> ManagedProcess:
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", module],
        env={**env, "PARLEY_HTTP_PORT": str(port)},
        log_path=logs / f"{name}.log",
    )
    proc.probe = lambda: ready(port)  # type: ignore[method-assign]
    return proc


@pytest.fixture(scope="module")
async def fault_stack(
    infra: Any, tmp_path_factory: pytest.TempPathFactory, fault_env: dict[str, str]
) -> AsyncIterator[FaultStack]:
    root = tmp_path_factory.mktemp("faults")
    logs = root / "logs"
    nats_server = NatsServer(root / "nats", log_path=logs / "nats.log")
    valkey = _valkey(root, None, logs / "valkey.log")
    nats_server.start()
    valkey.start()
    await asyncio.to_thread(nats_server.wait_ready, 30)
    await asyncio.to_thread(valkey.wait_ready, 30)
    server_url = with_database(infra.database_url, "postgres")
    database = f"parley_faults_{secrets.token_hex(6)}"
    await asyncio.to_thread(create_database, server_url, database, if_missing=False)
    database_url = with_database(infra.database_url, database)
    await asyncio.to_thread(upgrade_auth, database_url)
    await asyncio.to_thread(upgrade_catalog, database_url)
    mail_dir = root / "mail"
    # No LLM keys from the caller's environment: the built-in engine answers (deterministically).
    infra_vars = {"NATS_URL", "REDIS_URL", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in infra_vars and not k.startswith("PARLEY_LLM_")}
    env.update(
        NATS_URL=nats_server.url,
        REDIS_URL=valkey.url,
        DATABASE_URL=database_url,
        PARLEY_HTTP_HOST="127.0.0.1",
        PARLEY_LOG_JSON="false",
        PYTHONUNBUFFERED="1",
        PARLEY_AUTH_TOKEN_SECRET=secrets.token_urlsafe(32),
        PARLEY_AUTH_MAIL_DIR=str(mail_dir),
        PARLEY_CATALOG_SECRET_KEY=secrets.token_urlsafe(32),
        PARLEY_CATALOG_CONVERSATIONS_RETRY_DELAY_S="0.2",
        PARLEY_RUNTIME_BUILTIN_PACE_MS=str(PACE_MS),
        PARLEY_RUNTIME_RECONNECT_GRACE_S=str(GRACE_S),
    )
    for limit in ("SIGNUP_IP", "LOGIN_IP", "LOGIN_ACCOUNT", "RECOVER_IP", "RECOVER_ACCOUNT"):
        env[f"PARLEY_AUTH_RATE_{limit}"] = NO_LIMIT
    for limit in ("KEY_CREATE_IP", "KEY_CREATE_ACCOUNT", "TOKEN_MINT_ACCOUNT"):
        env[f"PARLEY_AUTH_RATE_{limit}"] = NO_LIMIT
    env.update(fault_env)
    ports = {name: free_port() for name in ("auth", "catalog", "gateway")}
    redis = Redis.from_url(valkey.url, socket_connect_timeout=1)
    s = FaultStack(
        auth=f"http://127.0.0.1:{ports['auth']}",  # type: ignore[arg-type]  # a URL here, see http()
        catalog=f"http://127.0.0.1:{ports['catalog']}",  # type: ignore[arg-type]
        gateway_url=f"ws://127.0.0.1:{ports['gateway']}/realtime",
        redis=redis,
        mail_dir=mail_dir,
        hooks_url="",
        env=env,
        logs=logs,
        nats=nats_server,
        valkey=valkey,
        root=root,
    )
    s.services = [
        _service("auth", "parley_auth", ports["auth"], env, logs),
        _service("catalog", "parley_catalog", ports["catalog"], env, logs),
    ]
    s.gateway = _service("gateway", "parley_session_gateway", ports["gateway"], env, logs)
    for proc in [*s.services, s.gateway]:
        proc.start()
    s.start_worker()
    s.start_worker()
    try:
        for proc in [*s.services, s.gateway, *s.workers]:
            await asyncio.to_thread(proc.wait_ready, 60)
        yield s
    finally:
        await asyncio.to_thread(stop_all, [*s.services, s.gateway, *s.workers], 10)
        await redis.aclose()
        servers = [server for server in (s.nats, s.valkey) if server is not None]
        await asyncio.to_thread(stop_all, servers, 10)
        await asyncio.to_thread(drop_database, server_url, database)
