"""Liveness and readiness. A service is ready when every one of its named checks passes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from faststream.nats import NatsBroker
from pydantic import BaseModel
from redis.asyncio import Redis

if TYPE_CHECKING:  # only the services with a database import SQLAlchemy (~1 s of a start-up)
    from sqlalchemy.ext.asyncio import AsyncEngine

Check = Callable[[], Awaitable[None]]


class ReadinessReport(BaseModel):
    status: str  # "ready" | "not_ready"
    checks: dict[str, str]  # name -> "ok" or the failure reason

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class Readiness:
    def __init__(self, timeout_s: float = 1.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout = timeout_s

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def report(self) -> ReadinessReport:
        async def run(name: str, check: Check) -> tuple[str, str]:
            try:
                async with asyncio.timeout(self._timeout):
                    await check()
            except Exception as exc:
                return name, f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
            return name, "ok"

        results = dict(await asyncio.gather(*(run(n, c) for n, c in self._checks.items())))
        ready = all(v == "ok" for v in results.values())
        return ReadinessReport(status="ready" if ready else "not_ready", checks=results)


def nats_check(broker: NatsBroker) -> Check:
    async def check() -> None:
        if not await broker.ping(timeout=0.5):
            raise ConnectionError("not connected to NATS")
        # A flush is a PING/PONG round trip: proves the server answers, not just that a socket is open.
        await broker.connection.flush(timeout=1)

    return check


def redis_check(redis: Redis) -> Check:
    async def check() -> None:
        await redis.ping()

    return check


def sqlalchemy_check(engine: AsyncEngine) -> Check:
    from sqlalchemy import text

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check
