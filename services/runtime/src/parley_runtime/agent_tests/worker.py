"""Pulls test-run jobs from the `AGENT_TESTS` work queue and runs each one (runner.py).

Test runs have their own queue, durable consumer and per-worker limit
(`PARLEY_RUNTIME_AGENT_TESTS_MAX_CONCURRENT`), so however many runs are queued, a worker never
holds more than that many, and session starts of real users never wait behind them. A claimed job
stays unacknowledged while its run goes on (`in progress` every heartbeat) and is acked once the
verdict is published. If the worker dies, JetStream delivers the job again after `ack_wait` to
another worker, which resumes the run from its checkpoint. A worker stopping on purpose hands its
runs back at once (negative ack). The pulling, heartbeats and hand-back are those of every work
queue of the runtime (workqueue.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import ValidationError

from parley_common.agent_test_contract import AgentTestJob, ensure_streams
from parley_common.session_contract import trace_context
from parley_common.tasks import cancel_and_wait
from parley_common.telemetry import current_span
from parley_runtime import bus
from parley_runtime.agent_tests.checkpoint import OwnershipLost
from parley_runtime.agent_tests.runner import RunnerDeps, TestRunner
from parley_runtime.workqueue import Held, QueueWorker

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("parley.runtime")


class AgentTestWorker(QueueWorker[Held]):
    name = "agent_tests"

    def __init__(
        self,
        js: JetStreamContext,
        deps: RunnerDeps,
        *,
        max_concurrent: int,
        ack_wait_s: float,
        heartbeat_s: float,
    ) -> None:
        super().__init__(js, bus.AGENT_TEST_JOBS, limit=max_concurrent, ack_wait_s=ack_wait_s)
        self.deps = deps
        self.heartbeat_s = heartbeat_s
        self.jobs = self.held
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await ensure_streams(self.js)
        self._tasks = [
            await self.subscribe(),
            asyncio.create_task(self._heartbeat_loop(), name="agent-tests-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop claiming and hand every run still held back to JetStream (resumed elsewhere)."""
        await cancel_and_wait(*self._tasks)
        await self.hand_back()

    async def claim(self, msg: Msg) -> None:
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
        entry = self.jobs[job.run_id] = Held(msg=msg)
        entry.task = asyncio.create_task(self._run(job, entry.deliveries), name=f"agent-test-{job.run_id}")

    async def _run(self, job: AgentTestJob, deliveries: int) -> None:
        entry = self.jobs.get(job.run_id)
        # The run continues the trace of the request that started it (catalog → bus → here).
        token = otel_context.attach(trace_context(dict(entry.msg.headers or {}) if entry else None))
        try:
            attributes: dict[str, str | int] = {
                "agent_test.run_id": str(job.run_id),
                "agent_test.deliveries": deliveries,
            }
            with current_span(tracer, "runtime.agent_test", attributes=attributes):
                await TestRunner(self.deps, job, deliveries).run()
            if entry is not None:
                await entry.ack()
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
            self.freed()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.beat()
