"""One app and lifespan builder for every service.

    kit = ServiceKit(settings, redis=True)            # broker, Redis, readiness, health ping
    handlers.register(kit.broker, ...)                 # the service's own bus handlers

    @kit.part                                          # the service's own workers, started after
    @asynccontextmanager                               # the broker and stopped before it
    async def workers(app: FastAPI) -> AsyncIterator[None]:
        ...
        yield
        ...

    app = kit.build_app(title=..., description=..., routers=[...])

The lifespan starts, in order: the `before_broker` parts, the broker, the `part`s; it stops them in
the reverse order and then closes Redis and the database. Each of those shutdown steps gets
`shutdown_step_timeout_s`: one that overruns or raises is logged and left behind, and the steps
after it still run (`kit.shutdown`). Readiness (`/readyz`) checks NATS and whatever the kit was
given (Redis, PostgreSQL) plus any check a service adds; `/metrics`, `/healthz` and the version
routes come from `parley_common.http.create_app`. Every service answers the health ping on
`health.<service>` (queue group: any one replica answering proves the service is reachable over
the bus).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from faststream.nats import NatsBroker
from redis.asyncio import Redis

from parley_common.bus import make_broker
from parley_common.http import create_app
from parley_common.kit.health import Check, Readiness, nats_check, redis_check, sqlalchemy_check
from parley_common.kit.shutdown import BoundedExit, run_step, step_name
from parley_common.redis_client import make_redis
from parley_common.settings import CommonSettings
from parley_common.subjects import health_ping

if TYPE_CHECKING:  # a service with a database imports it (and SQLAlchemy, ~1 s of a start-up) itself
    from parley_common.kit.db import Database

Part = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class ServiceKit:
    """The plumbing of one service process; what it builds is on `app.state` too."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        redis: bool = False,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.broker: NatsBroker = make_broker(settings)
        self._redis = make_redis(settings) if redis else None
        self.db = database
        self.readiness = Readiness()
        self.readiness.add("nats", nats_check(self.broker))
        if self._redis is not None:
            self.readiness.add("redis", redis_check(self._redis))
        if database is not None:
            self.readiness.add("postgres", sqlalchemy_check(database.engine))
        self._before: list[Part] = []
        self._parts: list[Part] = []
        # What a service adds to its health-ping reply (a speech worker: its id and its sessions).
        self.health_info: Callable[[], dict[str, Any]] = dict
        self._register_health_ping()

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError(f"{self.name}: ServiceKit built without redis=True")
        return self._redis

    def add_check(self, name: str, check: Check) -> None:
        self.readiness.add(name, check)

    def part(self, part: Part) -> Part:
        """Run `part` inside the lifespan, after the broker started (decorator)."""
        self._parts.append(part)
        return part

    def before_broker(self, part: Part) -> Part:
        """Run `part` inside the lifespan, before the broker starts (decorator)."""
        self._before.append(part)
        return part

    def build_app(
        self,
        *,
        title: str,
        description: str = "",
        routers: Sequence[APIRouter] = (),
        app_class: type[FastAPI] = FastAPI,
    ) -> FastAPI:
        app = create_app(
            self.settings,
            title=title,
            description=description,
            routers=routers,
            lifespan=self._lifespan,
            readiness=self.readiness,
            app_class=app_class,
        )
        app.state.broker = self.broker
        if self._redis is not None:
            app.state.redis = self._redis
        return app

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        limit = self.settings.shutdown_step_timeout_s
        async with AsyncExitStack() as stack:
            if self.db is not None:
                stack.push_async_callback(run_step, "db.dispose", limit, self.db.dispose)
            if self._redis is not None:
                stack.push_async_callback(run_step, "redis.aclose", limit, self._redis.aclose)
            for part in self._before:
                await stack.enter_async_context(BoundedExit(part(app), step_name(part), limit))
            await self.broker.start()
            stack.push_async_callback(run_step, "broker.stop", limit, self.broker.stop)
            for part in self._parts:
                await stack.enter_async_context(BoundedExit(part(app), step_name(part), limit))
            yield

    def _register_health_ping(self) -> None:
        name = self.name

        @self.broker.subscriber(health_ping(name), queue=name)
        async def health() -> dict[str, Any]:
            return {"service": name, "ok": True, **self.health_info()}
