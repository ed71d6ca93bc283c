"""The runtime process is ready exactly when NATS and Redis answer, and answers its bus ping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.errors import ConnectionClosedError, NoRespondersError
from structlog.testing import capture_logs

from parley_common import subjects
from parley_devstack.servers import NatsServer
from parley_devstack.testing import Infra, assert_not_ready_without, assert_serves, started, unreachable
from parley_runtime import bus
from parley_runtime.app import _stop_octavus, build_app
from parley_runtime.octavus.service import OctavusService
from parley_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
async def own_nats(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A broker of this module's own: the shared one may hold session starts and agent-test jobs
    that other tests left behind, which a worker started here (one without Redis, even) would claim."""
    server = NatsServer(Path(tmp_path_factory.mktemp("runtime-app-nats")))
    server.start()
    try:
        await asyncio.to_thread(server.wait_ready, 30)
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


async def test_ready_and_answers_health_ping(infra: Infra, own_nats: str) -> None:
    app = build_app(RuntimeSettings(nats_url=own_nats, redis_url=infra.redis_url))
    await assert_serves(app, own_nats, "runtime", {"nats", "redis"})


async def test_not_ready_without_redis(own_nats: str) -> None:
    app = build_app(RuntimeSettings(nats_url=own_nats, redis_url=unreachable("redis")))
    await assert_not_ready_without(app, "redis")


async def _octavus_left(nats_url: str) -> bool:
    """Within 2 s, a trigger request finds no responder (the only worker has left the subject)."""
    nc = await nats.connect(nats_url)
    try:
        for _ in range(40):
            try:
                await nc.request(subjects.OCTAVUS_SESSION_TRIGGER, b"{}", timeout=2)
            except NoRespondersError:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await nc.close()


@dataclass
class Stopping:
    """A started worker's app, stopping (`stop`) with an Octavus execution still running (ended
    by setting `finish`)."""

    app: FastAPI
    finish: asyncio.Event
    execution: asyncio.Task[bool]
    stop: asyncio.Task[bool | None]


@asynccontextmanager
async def stopping_with_an_execution(infra: Infra, nats_url: str) -> AsyncIterator[Stopping]:
    settings = RuntimeSettings(nats_url=nats_url, redis_url=infra.redis_url, runtime_drain_timeout_s=5.0)
    app = build_app(settings)
    lifespan = started(app)
    await lifespan.__aenter__()
    finish = asyncio.Event()
    execution = asyncio.create_task(finish.wait())  # an execution still streaming at the stop
    app.state.octavus._tasks.add(execution)
    execution.add_done_callback(app.state.octavus._tasks.discard)
    stop = asyncio.create_task(lifespan.__aexit__(None, None, None))
    try:
        yield Stopping(app, finish, execution, stop)
    finally:
        finish.set()
        await asyncio.wait({stop}, timeout=10)


async def test_a_stop_drains_octavus_executions_and_sessions_at_once(infra: Infra, own_nats: str) -> None:
    """At a stop the session worker stops claiming and the Octavus subjects are left at once, while
    an Octavus execution still runs: the drains overlap (one drain's time, which the grace period
    is sized for), where the worker went on claiming sessions through the executions' drain, and
    took Octavus requests, whose executions no drain waited for, until the broker stopped."""
    async with stopping_with_an_execution(infra, own_nats) as s:
        worker = s.app.state.worker
        draining = asyncio.create_task(worker.deps.draining.wait())
        try:
            done, _ = await asyncio.wait({draining}, timeout=2)
            assert done, "the worker went on claiming sessions while the Octavus execution drained"
            assert worker._tasks[0].done()  # its fetch of session starts
            assert await _octavus_left(own_nats), "the stopping worker still took Octavus requests"
            assert not s.execution.done() and not s.stop.done()  # the execution is let finish
        finally:
            draining.cancel()
    assert s.stop.done() and s.stop.exception() is None


async def test_a_failed_leave_still_drains_the_executions(
    infra: Infra, own_nats: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leaving the Octavus subjects can fail (the connection already closing): the running
    executions are drained all the same, and the stop step is logged as failed."""

    async def closing(subscribers: object, *, timeout_s: float) -> None:
        raise ConnectionClosedError

    monkeypatch.setattr(bus, "leave", closing)
    with capture_logs() as logs:
        async with stopping_with_an_execution(infra, own_nats) as s:
            await asyncio.sleep(0.5)
            assert not s.stop.done(), "the stop did not wait for the running execution"
        assert s.stop.done() and s.stop.exception() is None
    failed = [e for e in logs if e["event"] == "shutdown.step_failed"]
    assert [e["error"] for e in failed] == ["ConnectionClosedError"]


async def test_leaving_and_the_executions_share_one_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Octavus requests answered while leaving and the executions share one drain timeout (the
    one the grace period is sized for): an execution still running when it is up is cancelled."""
    none: Any = None
    octavus = OctavusService(broker=none, store=none, agents=none, llm=none, ping_s=1.0, drain_s=1.0)

    async def outlasting() -> None:  # an execution still running after the drain
        await asyncio.Event().wait()

    execution = asyncio.create_task(outlasting())
    octavus._tasks.add(execution)
    answering = 0.6

    async def leave(subscribers: object, *, timeout_s: float) -> None:
        assert timeout_s == 1.0
        await asyncio.sleep(answering)

    monkeypatch.setattr(bus, "leave", leave)
    started = time.monotonic()
    await _stop_octavus(octavus, [])
    assert execution.cancelled()
    assert 0.9 < time.monotonic() - started < 1.0 + answering
