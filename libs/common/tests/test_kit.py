"""The service kit: one lifespan (parts around the broker, Redis and the database closed last, each
shutdown step bounded in time), readiness of what it was given, and the health ping with a
service's own additions; a served process freezes what its startup built out of the garbage
collector."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from prometheus_client import REGISTRY
from pydantic import ValidationError
from structlog.testing import capture_logs

from parley_common import metrics
from parley_common.kit.db import Database
from parley_common.kit.runner import freeze_after_startup
from parley_common.kit.service import Part, ServiceKit
from parley_common.settings import CommonSettings
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra, health_ping, readiness


def settings(infra: Infra, **overrides: Any) -> CommonSettings:
    urls = {"nats_url": infra.nats_url, "redis_url": infra.redis_url, "database_url": infra.database_url}
    return CommonSettings(service_name="kit-test", **(urls | overrides))


async def test_parts_run_around_the_broker_in_order(infra: Infra) -> None:
    kit = ServiceKit(settings(infra), redis=True, database=Database(infra.database_url))
    events: list[str] = []

    def recorder(name: str) -> Part:
        @asynccontextmanager
        async def part(_: FastAPI) -> AsyncIterator[None]:
            events.append(f"start {name} (broker connected: {kit.broker._connection is not None})")
            yield
            events.append(f"stop {name} (broker connected: {kit.broker._connection is not None})")

        return part

    kit.before_broker(recorder("engines"))
    kit.part(recorder("workers"))
    kit.part(recorder("consumers"))
    kit.health_info = lambda: {"sessions": len(events)}
    app = kit.build_app(title="kit test")
    assert app.state.broker is kit.broker and app.state.redis is kit.redis

    async with app.router.lifespan_context(app):
        assert await readiness(app) == (200, {"nats": "ok", "redis": "ok", "postgres": "ok"})
        reply = await health_ping(infra.nats_url, "kit-test")
        assert reply == {"service": "kit-test", "ok": True, "sessions": 3}
    assert events == [
        "start engines (broker connected: False)",
        "start workers (broker connected: True)",
        "start consumers (broker connected: True)",
        "stop consumers (broker connected: True)",
        "stop workers (broker connected: True)",
        "stop engines (broker connected: False)",
    ]


def recording(events: list[str], name: str) -> Part:
    """A part whose exit says that it ran."""

    @asynccontextmanager
    async def part(_: FastAPI) -> AsyncIterator[None]:
        yield
        events.append(f"stop {name}")

    return part


def recorded_kit(infra: Infra, events: list[str]) -> ServiceKit:
    """A kit whose database says when it was closed (the last shutdown step)."""

    class Recorded(Database):
        async def dispose(self) -> None:
            await super().dispose()
            events.append("db disposed")

    return ServiceKit(settings(infra), redis=True, database=Recorded(infra.database_url))


async def test_a_part_whose_stop_hangs_is_left_behind_and_the_later_steps_still_run(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part stuck in its exit (it awaits what never comes) held the whole lifespan: the process
    never stopped, nothing said where, and the broker's drain never ran (commit 2dd1a0b)."""
    monkeypatch.setenv("PARLEY_SHUTDOWN_STEP_TIMEOUT_S", "0.3")
    events: list[str] = []

    kit = recorded_kit(infra, events)

    @asynccontextmanager
    async def stuck(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.Event().wait()  # never set

    kit.part(recording(events, "workers"))
    kit.part(stuck)
    app = kit.build_app(title="kit test")
    started = time.monotonic()
    with capture_logs() as logs:
        async with asyncio.timeout(10):  # the old lifespan waits forever: fail, do not hang
            async with app.router.lifespan_context(app):
                nc = kit.broker.connection
    assert time.monotonic() - started < 5
    overran = [e for e in logs if e["event"] == "shutdown.step_overran"]
    assert [(e["log_level"], e["step"], e["timeout_s"]) for e in overran] == [
        ("warning", stuck.__qualname__, 0.3)
    ]
    assert overran[0]["step"].endswith("<locals>.stuck")  # the part factory's qualified name
    # The part registered before the stuck one stopped after it, then the broker drained and the
    # database was closed last.
    assert events == ["stop workers", "db disposed"]
    assert nc.is_closed


async def test_a_part_that_swallows_its_cancel_is_left_running_and_the_later_steps_still_run(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound cancels a step that overruns; one that catches that cancel and waits on (as
    `task.cancel(); with suppress(CancelledError): await task` does when its own caller is
    cancelled) held the whole lifespan while the step was awaited in the lifespan's own task."""
    monkeypatch.setenv("PARLEY_SHUTDOWN_STEP_TIMEOUT_S", "0.3")
    events: list[str] = []
    released = asyncio.Event()
    cancels = 0

    kit = recorded_kit(infra, events)

    @asynccontextmanager
    async def deaf(_: FastAPI) -> AsyncIterator[None]:
        nonlocal cancels
        yield
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                cancels += 1  # swallowed: it waits on

    kit.part(recording(events, "workers"))
    kit.part(deaf)
    app = kit.build_app(title="kit test")

    async def run() -> Client:
        async with app.router.lifespan_context(app):
            return kit.broker.connection

    started = time.monotonic()
    with capture_logs() as logs:
        # In a task: a lifespan that waits on the step cannot be cancelled either (the step
        # swallows that cancel too), so it is waited for, then released, and the test fails.
        stopping = asyncio.create_task(run())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        elapsed = time.monotonic() - started
        released.set()
        nc = await stopping
    assert done and elapsed < 5, "the lifespan waited on a step that swallowed its cancel"
    assert cancels == 1  # cancelled once, at its overrun, then left behind
    stops = [(e["event"], e["step"]) for e in logs if e["event"].startswith("shutdown.")]
    assert stops == [
        ("shutdown.step_overran", deaf.__qualname__),
        ("shutdown.step_left_running", deaf.__qualname__),
    ]
    assert events == ["stop workers", "db disposed"]
    assert nc.is_closed
    await asyncio.sleep(0)  # released: the step left behind ends


async def test_a_part_whose_stop_raises_is_logged_and_the_later_steps_still_run(infra: Infra) -> None:
    kit = ServiceKit(settings(infra), redis=True)
    events: list[str] = []

    @asynccontextmanager
    async def failing(_: FastAPI) -> AsyncIterator[None]:
        yield
        raise RuntimeError("cannot reach redis://:hunter2@cache:6379/0")

    kit.part(recording(events, "workers"))
    kit.part(failing)
    app = kit.build_app(title="kit test")
    with capture_logs() as logs:
        async with app.router.lifespan_context(app):  # the failure does not escape the shutdown
            nc = kit.broker.connection
    failed = [e for e in logs if e["event"] == "shutdown.step_failed"]
    assert failed == [
        {
            "event": "shutdown.step_failed",
            "log_level": "warning",
            "step": failing.__qualname__,
            "error": "RuntimeError",
        }
    ]
    assert "hunter2" not in repr(logs)  # an exception's message may carry a credential: never logged
    assert events == ["stop workers"]
    assert nc.is_closed


def test_the_shutdown_step_timeout_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_SHUTDOWN_STEP_TIMEOUT_S", raising=False)
    assert CommonSettings().shutdown_step_timeout_s == 60.0
    monkeypatch.setenv("PARLEY_SHUTDOWN_STEP_TIMEOUT_S", "90")
    assert CommonSettings().shutdown_step_timeout_s == 90.0
    monkeypatch.setenv("PARLEY_SHUTDOWN_STEP_TIMEOUT_S", "0")  # every step cut at once: refused
    with pytest.raises(ValidationError, match="greater than 0"):
        CommonSettings()


async def test_not_ready_names_what_is_down(infra: Infra) -> None:
    down = settings(
        infra,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
    )
    kit = ServiceKit(down, redis=True, database=Database(down.database_url))
    app = kit.build_app(title="kit test")
    async with app.router.lifespan_context(app):
        status, checks = await readiness(app)
    assert (status, checks["nats"]) == (503, "ok")
    assert checks["redis"] != "ok" and checks["postgres"] != "ok"


async def test_a_kit_without_redis_says_so(infra: Infra) -> None:
    kit = ServiceKit(settings(infra))
    with pytest.raises(RuntimeError, match="redis=True"):
        _ = kit.redis


async def test_a_served_app_freezes_what_its_startup_built() -> None:
    """Full collections then walk only what came after the startup (the sessions), not the
    modules, routes, schemas and pools that live as long as the process."""
    built: list[object] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        built.append(object())
        yield

    app = freeze_after_startup(FastAPI(lifespan=lifespan))
    assert gc.get_freeze_count() == 0
    try:
        async with app.router.lifespan_context(app):
            assert built and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_a_served_app_collects_with_the_configured_thresholds() -> None:
    """Full collections walk every live session: the service's thresholds space them out."""
    before = gc.get_threshold()
    app = freeze_after_startup(FastAPI(), CommonSettings().gc_thresholds)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_threshold() == (10_000, 10, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_gc_thresholds_are_read_from_the_environment_and_zero_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_GC_THRESHOLDS", "[700, 10, 10]")
    assert CommonSettings().gc_thresholds == (700, 10, 10)  # Python's own
    monkeypatch.setenv("PARLEY_GC_THRESHOLDS", "[0, 10, 10]")  # the collector off: refused
    with pytest.raises(ValidationError, match="at least 1"):
        CommonSettings()


async def test_a_served_app_counts_the_collectors_time_by_generation() -> None:
    """`parley_gc_seconds_total{generation}`: what the thresholds tune, on every service's /metrics."""

    def seconds(generation: int) -> float:
        return REGISTRY.get_sample_value("parley_gc_seconds_total", {"generation": str(generation)}) or 0.0

    before = gc.get_threshold()
    app = freeze_after_startup(FastAPI(), CommonSettings().gc_thresholds)
    try:
        async with app.router.lifespan_context(app):
            full, young = seconds(2), seconds(0)
            gc.collect()
            gc.collect(0)
            assert seconds(2) > full and seconds(0) > young
        async with app.router.lifespan_context(app):  # a second start: still one callback
            assert sum(cb is metrics._on_gc for cb in gc.callbacks) == 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
