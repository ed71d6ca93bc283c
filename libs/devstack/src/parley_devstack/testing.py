"""Infrastructure for tests: NATS, Redis and PostgreSQL URLs, from wherever they can come.

For each of the three, in order:
1. the URL in `NATS_URL` / `REDIS_URL` / `DATABASE_URL`, when set (CI services, a dev's own servers);
2. a container, when `PARLEY_TEST_INFRA=docker`, or when it is `auto` (the default) and both
   testcontainers is importable and a Docker engine answers;
3. otherwise the embedded servers from the devstack wheels, on free loopback ports in a temporary
   directory, without persistence (fast: all three are up in about a second).

PostgreSQL always gets a fresh database with a unique name on whichever server is used, dropped at
the end, so concurrent or repeated runs never see each other's rows.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, WebSocket

from parley_common.bus import flushed
from parley_common.http import create_app
from parley_common.settings import CommonSettings
from parley_devstack.postgres import PostgresServer, create_database, drop_database, with_database
from parley_devstack.servers import NatsServer, ValkeyServer, stop_all

SettingsT = TypeVar("SettingsT", bound=CommonSettings)
T = TypeVar("T")


@dataclass(frozen=True)
class Infra:
    nats_url: str
    redis_url: str
    database_url: str  # a database of its own, created for this run

    def env(self) -> dict[str, str]:
        """The variables a service reads them from, e.g. for a subprocess."""
        return {"NATS_URL": self.nats_url, "REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url}

    def settings(self, cls: type[SettingsT], **values: Any) -> SettingsT:
        """A service's settings on these servers, with plain-text logs; `values` set the rest."""
        urls = {"nats_url": self.nats_url, "redis_url": self.redis_url, "database_url": self.database_url}
        return cls(**{**urls, "log_json": False, **values})


def _docker_available() -> bool:
    try:
        import docker  # testcontainers depends on it
        import testcontainers.core.container  # noqa: F401
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        client.ping()
        client.close()
    except Exception:
        return False
    return True


def _use_docker() -> bool:
    mode = os.environ.get("PARLEY_TEST_INFRA", "auto").lower()
    if mode not in {"auto", "docker", "embedded"}:
        raise ValueError(f"PARLEY_TEST_INFRA must be auto, docker or embedded, not {mode!r}")
    if mode == "embedded":
        return False
    available = _docker_available()
    if mode == "docker" and not available:
        raise RuntimeError("PARLEY_TEST_INFRA=docker but testcontainers or a Docker engine is missing")
    return available


def _containers(stack: ExitStack, need: set[str]) -> dict[str, str]:
    """Start the missing servers in containers (stopped by `stack`); returns {kind: url}."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    urls: dict[str, str] = {}
    if "nats" in need:
        nats: Any = stack.enter_context(
            DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222)
        )
        wait_for_logs(nats, "Server is ready", timeout=30)
        urls["nats"] = f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}"
    if "redis" in need:
        from testcontainers.redis import RedisContainer

        redis: Any = stack.enter_context(RedisContainer("valkey/valkey:8-alpine"))
        urls["redis"] = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
    if "postgres" in need:
        from testcontainers.postgres import PostgresContainer

        pg: Any = stack.enter_context(PostgresContainer("postgres:17-alpine", driver=None))
        urls["postgres"] = pg.get_connection_url()
    return urls


def _embedded(stack: ExitStack, need: set[str]) -> dict[str, str]:
    """Start the missing servers from the devstack wheels (stopped by `stack`); returns {kind: url}."""
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-test-")))
    logs = root / "logs"
    servers: list[NatsServer | ValkeyServer | PostgresServer] = []
    # Registered first so it runs last: stops whatever was started even if a later start fails.
    stack.callback(lambda: stop_all(servers, timeout=10))
    if "nats" in need:
        servers.append(NatsServer(root / "nats", log_path=logs / "nats.log"))
    if "redis" in need:
        servers.append(ValkeyServer(root / "valkey", persistent=False, log_path=logs / "valkey.log"))
    if "postgres" in need:
        pg = PostgresServer(root / "pg" / "data", durable=False, log_path=logs / "postgres.log")
        pg.init()
        servers.append(pg)
    for server in servers:
        server.start()
    urls: dict[str, str] = {}
    for server in servers:
        server.wait_ready(30)
        if isinstance(server, NatsServer):
            urls["nats"] = server.url
        elif isinstance(server, ValkeyServer):
            urls["redis"] = server.url
        else:
            urls["postgres"] = server.url()
    return urls


@contextmanager
def infra() -> Iterator[Infra]:
    """NATS, Redis and a fresh PostgreSQL database for one test session (see the module doc)."""
    with ExitStack() as stack:
        given = {
            "nats": os.environ.get("NATS_URL"),
            "redis": os.environ.get("REDIS_URL"),
            "postgres": os.environ.get("DATABASE_URL"),
        }
        need = {kind for kind, url in given.items() if not url}
        started: dict[str, str] = {}
        if need:
            source = _containers if _use_docker() else _embedded
            started = source(stack, need)
        urls = {kind: given[kind] or started[kind] for kind in given}

        server_url = urls["postgres"]
        name = f"parley_test_{secrets.token_hex(6)}"
        create_database(server_url, name, if_missing=False)
        stack.callback(drop_database, server_url, name)
        yield Infra(
            nats_url=urls["nats"], redis_url=urls["redis"], database_url=with_database(server_url, name)
        )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """`app` served by uvicorn on a free loopback port, in this event loop and without its
    lifespan, for the length of the block; yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():  # it could not start: raise why
            await task
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def started(app: Any) -> AsyncIterator[Any]:
    """`app` with its lifespan running (broker, pools, background tasks) for the length of the block."""
    async with app.router.lifespan_context(app):
        yield app


def app_context(app: Any, kind: type[T]) -> T:
    """The service context a started `app` keeps in `app.state.ctx`, checked to be a `kind`."""
    context = app.state.ctx
    assert isinstance(context, kind), f"app.state.ctx is a {type(context).__name__}, not a {kind.__name__}"
    return context


def probe_app(settings: CommonSettings, *, http_path: str, ws_path: str, greeting: str) -> Any:
    """An app of the app factory with nothing of its own but a JSON route (`{"ok": true}`) and a
    WebSocket that accepts, sends `greeting` and closes: for tests of what the factory wraps
    around every route."""
    router = APIRouter()

    @router.get(http_path)
    async def probe() -> dict[str, bool]:
        return {"ok": True}

    @router.websocket(ws_path)
    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(greeting)
        await ws.close()

    return create_app(settings, title="probe", routers=[router])


async def asgi_get(app: Any, path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> list[dict[str, Any]]:
    """The ASGI messages `app` sends for `GET path`, called directly (no server, no socket). What
    the app raises after it answered (Starlette's outermost handler re-raises once it has sent
    its 500) is left to the server, as uvicorn does: the messages are returned all the same."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"probe"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays until the response is done
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception:
        if not sent:
            raise
    return sent


_PAGE_URL = re.compile(r"""(?:\b(?:src|href)\s*=\s*|\burl\s*:\s*)["']([^"']+)["']""")


def page_urls(html: str) -> list[str]:
    """Every URL an HTML page loads or points at: `src=`/`href=` attributes and `url:` settings of
    inline scripts (Swagger UI's document URL)."""
    return _PAGE_URL.findall(html)


async def readiness(app: Any) -> tuple[int, dict[str, str]]:
    """`GET /readyz` of an app whose lifespan is running: the status and the named checks."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/readyz")
    checks: dict[str, str] = response.json()["checks"]
    return response.status_code, checks


async def health_ping(nats_url: str, service: str) -> dict[str, Any]:
    """The reply of `service` to the bus health ping (`parley_common.kit.service`)."""
    import json

    import nats

    from parley_common.subjects import health_ping as subject

    nc = await nats.connect(nats_url)
    try:
        reply = await nc.request(subject(service), b"", timeout=5)
    finally:
        await nc.close()
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def subscribed(nc: Any) -> None:
    """Return once the server has every subscription `nc` (a nats-py client) made so far, so a
    message another connection publishes next reaches it (`parley_common.bus.flushed`)."""
    await flushed(nc, timeout=5)


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """`resp` (an httpx response) is the `Error` envelope with `status`, and `code` when given."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert set(body) >= {"code", "message", "doc_url"}, body
    assert body["doc_url"].startswith("http"), body
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


async def assert_serves(app: Any, nats_url: str, service: str, checks: set[str]) -> None:
    """With its lifespan running, `app` is ready (every one of `checks` ok) and `service` answers
    the bus health ping."""
    async with started(app):
        assert await readiness(app) == (200, dict.fromkeys(checks, "ok"))
        assert await health_ping(nats_url, service) == {"service": service, "ok": True}


async def assert_not_ready_without(app: Any, down: str) -> None:
    """With its lifespan running, `app` is not ready, and says it is `down` (NATS answering)."""
    async with started(app):
        status, checks = await readiness(app)
    assert (status, checks["nats"]) == (503, "ok")
    assert checks[down] != "ok"


# A readiness check's name, the settings field of its server's URL, and that URL's scheme.
_STORES = {"redis": ("redis_url", "redis"), "postgres": ("database_url", "postgresql")}


async def assert_ready_exactly_with(
    build_app: Callable[[SettingsT], Any], settings: type[SettingsT], infra: Infra, service: str, store: str
) -> None:
    """The app of `service` is ready exactly when NATS and its `store` (redis, postgres) answer, and
    answers its bus health ping: served on `infra`, then with the store's URL pointing nowhere."""
    field, scheme = _STORES[store]
    urls: dict[str, Any] = {"nats_url": infra.nats_url, field: getattr(infra, field)}
    await assert_serves(build_app(settings(**urls)), infra.nats_url, service, {"nats", store})
    urls[field] = unreachable(scheme)
    await assert_not_ready_without(build_app(settings(**urls)), store)


def unreachable(scheme: str) -> str:
    """A URL of `scheme` (redis, postgresql) on a loopback port where nothing listens."""
    from parley_devstack.servers import free_port

    user = "postgres@" if scheme == "postgresql" else ""
    return f"{scheme}://{user}127.0.0.1:{free_port()}/" + ("none" if scheme == "postgresql" else "0")


def module_from_file(name: str, path: Path) -> ModuleType:
    """A module of another test directory (test directories are not packages), loaded from `path`
    once, under `name`: the name pytest gives it when it collects that directory, so its classes
    are the same objects wherever it is used in one run."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
