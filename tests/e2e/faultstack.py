"""A realtime stack whose NATS and Redis the test itself kills and restarts (fault tests).

The same topology as test_realtime's `stack` (auth and catalog in-process, the session gateway and
two runtime workers as processes of their own) with two differences: the Redis server is the
stack's own too (a Valkey on a port of its own, append-only with fsync at every write, so a SIGKILL
loses nothing that was acknowledged), and both servers can be killed and started again on the same
port with the same data directory, as an operator's restart or a crash would. The runtime's claim
timing is left at its defaults, since its interplay with an outage is what these tests are about.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.e2e.test_realtime import NO_LIMIT, PACE_MS, Stack, _ready, webhook_server

from parley_auth.app import build_app as build_auth_app
from parley_auth.migrate import upgrade as upgrade_auth
from parley_auth.settings import AuthSettings
from parley_catalog.app import build_app as build_catalog_app
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_catalog.settings import CatalogSettings
from parley_devstack.servers import (
    ManagedProcess,
    NatsServer,
    ValkeyServer,
    create_database,
    drop_database,
    free_port,
    stop_all,
    with_database,
)

GRACE_S = 20.0  # reconnect grace of the runtime workers: longer than any outage here


@dataclass
class FaultStack(Stack):
    nats: NatsServer | None = None
    valkey: ValkeyServer | None = None
    root: Path = Path()

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
    common = {"database_url": database_url, "nats_url": nats_server.url, "redis_url": valkey.url}
    mail_dir = root / "mail"
    auth = build_auth_app(
        AuthSettings(
            **common,
            auth_token_secret=secrets.token_urlsafe(32),
            auth_mail_dir=mail_dir,
            auth_outbox_poll_s=0.05,
            log_json=False,
            auth_rate_signup_ip=NO_LIMIT,
            auth_rate_login_ip=NO_LIMIT,
            auth_rate_login_account=NO_LIMIT,
            auth_rate_recover_ip=NO_LIMIT,
            auth_rate_recover_account=NO_LIMIT,
            auth_rate_key_create_ip=NO_LIMIT,
            auth_rate_key_create_account=NO_LIMIT,
            auth_rate_token_mint_account=NO_LIMIT,
        )
    )
    catalog = build_catalog_app(
        CatalogSettings(
            **common,
            catalog_secret_key=secrets.token_urlsafe(32),
            log_json=False,
            catalog_conversations_retry_delay_s=0.2,
        )
    )
    gateway_port = free_port()
    infra_vars = {"NATS_URL", "REDIS_URL", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in infra_vars and not k.startswith("PARLEY_LLM_")}
    env.update(
        NATS_URL=nats_server.url,
        REDIS_URL=valkey.url,
        DATABASE_URL=database_url,
        PARLEY_HTTP_HOST="127.0.0.1",
        PARLEY_LOG_JSON="false",
        PYTHONUNBUFFERED="1",
        PARLEY_RUNTIME_BUILTIN_PACE_MS=str(PACE_MS),
        PARLEY_RUNTIME_RECONNECT_GRACE_S=str(GRACE_S),
    )
    env.update(fault_env)
    redis = Redis.from_url(valkey.url, socket_connect_timeout=1)
    with webhook_server() as hooks_url:
        async with auth.router.lifespan_context(auth), catalog.router.lifespan_context(catalog):
            s = FaultStack(
                auth=auth,
                catalog=catalog,
                gateway_url=f"ws://127.0.0.1:{gateway_port}/realtime",
                redis=redis,
                mail_dir=mail_dir,
                hooks_url=hooks_url,
                env=env,
                logs=logs,
                nats=nats_server,
                valkey=valkey,
                root=root,
            )
            s.gateway = ManagedProcess(
                "gateway",
                [sys.executable, "-m", "parley_session_gateway"],
                env={**env, "PARLEY_HTTP_PORT": str(gateway_port)},
                log_path=logs / "gateway.log",
            )
            s.gateway.probe = lambda: _ready(gateway_port)  # type: ignore[method-assign]
            s.gateway.start()
            s.start_worker()
            s.start_worker()
            try:
                for proc in [s.gateway, *s.workers]:
                    await asyncio.to_thread(proc.wait_ready, 60)
                yield s
            finally:
                await asyncio.to_thread(stop_all, [s.gateway, *s.workers], 10)
    await redis.aclose()
    servers = [server for server in (s.nats, s.valkey) if server is not None]
    await asyncio.to_thread(stop_all, servers, 10)
    await asyncio.to_thread(drop_database, server_url, database)
