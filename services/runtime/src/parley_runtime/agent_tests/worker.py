"""Pulls test-run jobs from the `AGENT_TESTS` work queue and runs each one (runner.py).

Test runs have their own queue, durable consumer and per-worker limit
(`PARLEY_RUNTIME_AGENT_TESTS_MAX_CONCURRENT`), so however many runs are queued, a worker never
holds more than that many, and session starts of real users never wait behind them. A claimed job
stays unacknowledged while its run goes on (`in progress` every heartbeat) and is acked once the
verdict is published. If the worker dies, JetStream delivers the job again after `ack_wait` to
another worker, which resumes the run from its checkpoint. A worker stopping on purpose hands its
runs back at once (negative ack).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import ValidationError

from parley_common.agent_test_contract import AgentTestJob, ensure_streams
from parley_common.jetstream import fetch_batch, hand_back
from parley_common.session_contract import trace_context
from parley_common.tasks import cancel_and_wait
from parley_runtime import bus
from parley_runtime.agent_tests.checkpoint import OwnershipLost
from parley_runtime.agent_tests.runner import RunnerDeps, TestRunner

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.runtime")


@dataclass
class _Job:
    msg: Msg
    task: asyncio.Task[None] | None = None
    acked: bool = False


class AgentTestWorker:
    def __init__(
        self,
        js: JetStreamContext,
        deps: RunnerDeps,
        *,
        max_concurrent: int,
        ack_wait_s: float,
        heartbeat_s: float,
    ) -> None:
        self.js = js
        self.deps = deps
        self.max_concurrent = max_concurrent
        self.ack_wait_s = ack_wait_s
        self.heartbeat_s = heartbeat_s
        self.jobs: dict[uuid.UUID, _Job] = {}
        self._slots = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        await ensure_streams(self.js)
        self._sub = await bus.AGENT_TEST_JOBS.bind(self.js, ack_wait_s=self.ack_wait_s)
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="agent-tests-fetch"),
            asyncio.create_task(self._heartbeat_loop(), name="agent-tests-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop claiming and hand every run still held back to JetStream (resumed elsewhere)."""
        await cancel_and_wait(*self._tasks)
        await hand_back(self.jobs.values())
        self.jobs.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        while True:
            free = self.max_concurrent - len(self.jobs)
            if free <= 0:
                self._slots.clear()
                await self._slots.wait()
                continue
            for msg in await fetch_batch(self._sub, free, event="agent_tests.fetch_failed", pause_s=0.5):
                await self._claim(msg)

    async def _claim(self, msg: Msg) -> None:
        try:
            job = AgentTestJob.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("agent_tests.bad_job", error=str(exc)[:500])
            await msg.term()  # never valid: do not redeliver
            return
        held = self.jobs.get(job.run_id)
        if held is not None:
            held.msg = msg  # redelivered to us while we run it (a late heartbeat): keep running
            return
        entry = self.jobs[job.run_id] = _Job(msg=msg)
        deliveries = msg.metadata.num_delivered or 1
        entry.task = asyncio.create_task(self._run(job, deliveries), name=f"agent-test-{job.run_id}")

    async def _run(self, job: AgentTestJob, deliveries: int) -> None:
        entry = self.jobs.get(job.run_id)
        # The run continues the trace of the request that started it (catalog → bus → here).
        token = otel_context.attach(trace_context(dict(entry.msg.headers or {}) if entry else None))
        try:
            attributes: dict[str, str | int] = {
                "agent_test.run_id": str(job.run_id),
                "agent_test.deliveries": deliveries,
            }
            with tracer.start_as_current_span("runtime.agent_test", attributes=attributes):
                await TestRunner(self.deps, job, deliveries).run()
            if entry is not None:
                entry.acked = True
                await entry.msg.ack()
        except asyncio.CancelledError:
            raise
        except OwnershipLost:
            log.warning("agent_tests.ownership_lost", run_id=str(job.run_id))
        except Exception:
            # Resumed from its checkpoint on the next delivery (here or on another worker).
            log.exception("agent_tests.run_crashed", run_id=str(job.run_id))
            if entry is not None and not entry.acked:
                with contextlib.suppress(Exception):
                    await entry.msg.nak(delay=1)
        finally:
            otel_context.detach(token)
            self.jobs.pop(job.run_id, None)
            self._slots.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            held = [j for j in self.jobs.values() if not j.acked]
            results = await asyncio.gather(*(j.msg.in_progress() for j in held), return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:
                log.warning("agent_tests.heartbeat_failed", count=len(failures), error=str(failures[0]))
