"""The e2e stack: its own NATS server, the session's Redis and PostgreSQL, the real auth and
catalog apps in-process, and the session gateway and runtime workers as processes of their own
(`python -m …`), so a worker can be killed with SIGKILL; a webhook server standing in for a CRM.

The `stack` fixture is module-scoped: a module that imports it gets a stack of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from parley_auth.app import build_app as build_auth_app
from parley_auth.migrate import upgrade as upgrade_auth
from parley_auth.settings import AuthSettings
from parley_catalog.app import build_app as build_catalog_app
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_catalog.settings import CatalogSettings
from parley_devstack.postgres import create_database, drop_database, with_database
from parley_devstack.servers import ManagedProcess, NatsServer, free_port, stop_all

GRACE_S = 1.5  # reconnect grace of the runtime workers
ACK_WAIT_S = 2.0  # a dead worker's sessions move on after this
PACE_MS = 40  # built-in LLM: pause before each word
NO_LIMIT = "1000000/minute"
LONG = " ".join(f"word{i}" for i in range(30))  # answered as 33 words, ~1.3 s at PACE_MS


# ------------------------------------------------------------------------------------ the stack


class Hooks(BaseHTTPRequestHandler):
    """The CRM a WEBHOOK node calls: records each request, answers with a fixed JSON body."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Hooks.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        payload = json.dumps({"vip": True, "name": "Ada"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Stack:
    auth: FastAPI
    catalog: FastAPI
    gateway_url: str
    redis: Redis
    mail_dir: Path
    hooks_url: str
    env: dict[str, str]
    logs: Path
    workers: list[ManagedProcess] = field(default_factory=list)
    gateway: ManagedProcess | None = None
    nats: NatsServer | None = None  # the stack's own NATS server, for tests that restart it

    def http(self, app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley", **kwargs)

    def start_worker(self) -> ManagedProcess:
        n = len(self.workers) + 1
        port = free_port()
        proc = ManagedProcess(
            f"runtime-{n}",
            [sys.executable, "-m", "parley_runtime"],
            env={**self.env, "PARLEY_HTTP_PORT": str(port)},
            log_path=self.logs / f"runtime-{n}.log",
        )
        proc.probe = lambda: ready(port)  # type: ignore[method-assign]
        proc.start()
        self.workers.append(proc)
        return proc

    async def redis_text(self, key: str) -> str:
        """A Redis string value that must be there (a session's owner, say)."""
        raw = await self.redis.get(key)
        assert isinstance(raw, bytes), f"{key}: {raw!r}"
        return raw.decode()

    def alive_workers(self) -> list[ManagedProcess]:
        return [w for w in self.workers if w.alive()]


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
async def stack(
    infra: Any, tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("realtime")
    nats_server = NatsServer(root / "nats", log_path=root / "logs" / "nats.log")
    nats_server.start()
    await asyncio.to_thread(nats_server.wait_ready, 30)
    # A database of its own too: other modules' auth apps would otherwise deliver our outbox mail.
    server_url = with_database(infra.database_url, "postgres")
    database = f"parley_rt_{secrets.token_hex(6)}"
    await asyncio.to_thread(create_database, server_url, database, if_missing=False)
    database_url = with_database(infra.database_url, database)
    await asyncio.to_thread(upgrade_auth, database_url)
    await asyncio.to_thread(upgrade_catalog, database_url)
    common = {"database_url": database_url, "nats_url": nats_server.url, "redis_url": infra.redis_url}
    mail_dir = root / "mail"
    auth = build_auth_app(
        AuthSettings(
            **common,
            auth_token_secret=secrets.token_urlsafe(32),
            auth_mail_dir=mail_dir,
            log_json=False,
            auth_rate_signup_ip=NO_LIMIT,
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
    # No LLM keys from the caller's environment: the built-in engine answers (deterministically).
    infra_vars = {"NATS_URL", "REDIS_URL", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in infra_vars and not k.startswith("PARLEY_LLM_")}
    env.update(
        NATS_URL=nats_server.url,
        REDIS_URL=infra.redis_url,
        DATABASE_URL=database_url,
        PARLEY_HTTP_HOST="127.0.0.1",
        PARLEY_LOG_JSON="false",
        PYTHONUNBUFFERED="1",
        PARLEY_RUNTIME_BUILTIN_PACE_MS=str(PACE_MS),
        PARLEY_RUNTIME_CLAIM_ACK_WAIT_S=str(ACK_WAIT_S),
        PARLEY_RUNTIME_CLAIM_HEARTBEAT_S="0.4",
        PARLEY_RUNTIME_RECONNECT_GRACE_S=str(GRACE_S),
        PARLEY_RUNTIME_WEBHOOK_ALLOW_PRIVATE="true",
        PARLEY_GATEWAY_HANDSHAKE_TIMEOUT_S="1.5",
        PARLEY_GATEWAY_INPUT_RATE_PER_S="50",
        PARLEY_GATEWAY_INPUT_BURST="30",
        PARLEY_GATEWAY_MAX_TEXT_FRAME_BYTES="4096",
        PARLEY_GATEWAY_MAX_BINARY_FRAME_BYTES="65536",
    )
    env.update(stack_env)
    redis = Redis.from_url(infra.redis_url)
    with webhook_server() as hooks_url:
        async with auth.router.lifespan_context(auth), catalog.router.lifespan_context(catalog):
            s = Stack(
                auth=auth,
                catalog=catalog,
                gateway_url=f"ws://127.0.0.1:{gateway_port}/realtime",
                redis=redis,
                mail_dir=mail_dir,
                hooks_url=hooks_url,
                env=env,
                logs=root / "logs",
                nats=nats_server,
            )
            s.gateway = ManagedProcess(
                "gateway",
                [sys.executable, "-m", "parley_session_gateway"],
                env={**env, "PARLEY_HTTP_PORT": str(gateway_port)},
                log_path=s.logs / "gateway.log",
            )
            s.gateway.probe = lambda: ready(gateway_port)  # type: ignore[method-assign]
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
    await asyncio.to_thread(nats_server.stop)
    await asyncio.to_thread(drop_database, server_url, database)
