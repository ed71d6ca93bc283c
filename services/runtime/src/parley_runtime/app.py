"""Bus wiring of a runtime worker, plus the small HTTP app that exposes its health.

The worker's real work arrives over NATS (every subscription is declared in bus.py); HTTP is only there so
orchestrators (and the devstack edge) can probe `/healthz` and `/readyz` the same way as for every
other service.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from faststream.nats.subscriber.usecases import CoreSubscriber
from redis.asyncio import Redis

from parley_common import subjects
from parley_common.agent_test_contract import AgentTestEvent
from parley_common.bus import bus_events
from parley_common.kit.service import ServiceKit
from parley_common.netguard import guarded_client
from parley_common.session_contract import trace_headers
from parley_runtime import bus
from parley_runtime.agent_tests.checkpoint import CheckpointStore
from parley_runtime.agent_tests.conversation import BusConversation
from parley_runtime.agent_tests.runner import RunnerDeps
from parley_runtime.agent_tests.worker import AgentTestWorker
from parley_runtime.agents import AgentCache
from parley_runtime.llm import LLMRegistry, LLMSettings
from parley_runtime.llm_port import LLMPort
from parley_runtime.octavus.service import OctavusService
from parley_runtime.octavus.store import SessionStore
from parley_runtime.sessions.runner import Deps
from parley_runtime.sessions.store import StateStore
from parley_runtime.sessions.worker import SessionWorker
from parley_runtime.settings import RuntimeSettings, get_settings


def build_app(settings: RuntimeSettings | None = None, *, llm_settings: LLMSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    kit = ServiceKit(settings, redis=True)
    broker, redis = kit.broker, kit.redis
    agents = AgentCache(
        broker, ttl_s=settings.runtime_agent_cache_ttl_s, timeout_s=settings.bus_request_timeout_s
    )

    llm = LLMPort(LLMRegistry(llm_settings))
    octavus = OctavusService(
        broker=broker,
        store=SessionStore.from_settings(redis, settings),
        agents=agents,
        llm=llm,
        ping_s=settings.runtime_octavus_keepalive_s,
        drain_s=settings.runtime_drain_timeout_s,
    )
    octavus_subscribers = bus.register(broker, on_agent_event=agents.on_event, octavus=octavus)

    @kit.part
    @asynccontextmanager
    async def workers(app: FastAPI) -> AsyncIterator[None]:
        nc = broker.connection
        deps = Deps(
            settings=settings,
            nc=nc,
            js=nc.jetstream(),
            store=StateStore.from_settings(redis, settings),
            agents=agents,
            # Webhook calls: the address guard unless the setting allows private destinations.
            http=guarded_client(lambda: not settings.runtime_webhook_allow_private),
            llm=llm,
            token=f"{settings.service_name}-{os.getpid()}-{secrets.token_hex(6)}",
            events=bus_events(broker),
        )
        worker = SessionWorker(deps)
        app.state.worker = worker
        app.state.octavus = octavus
        tests = _agent_test_worker(deps, redis)
        app.state.agent_tests = tests
        try:
            await worker.start()
            await tests.start()
            yield
        finally:
            # All three drain at once: the session worker stops claiming at once, not only after the
            # Octavus executions have drained, and the waits overlap, so a stop takes one drain
            # (`runtime_drain_timeout_s`, which the grace period is sized for), not their sum.
            stopped = await asyncio.gather(
                _stop_octavus(octavus, octavus_subscribers),
                tests.stop(),
                worker.stop(),
                return_exceptions=True,
            )
            await deps.store.aclose()
            await deps.http.aclose()
            await llm.aclose()
            for outcome in stopped:
                if isinstance(outcome, BaseException):
                    raise outcome

    return kit.build_app(
        title="Parley runtime worker",
        description="Health of a runtime worker; sessions are executed from the bus.",
    )


async def _stop_octavus(octavus: OctavusService, subscribers: list[CoreSubscriber]) -> None:
    # Its subjects left first, as the session worker stops claiming: the other workers get the next
    # requests, and no execution starts here that the drain would not wait for. The requests
    # already delivered are answered (a trigger's execution joins the drain) and the executions
    # drain within one drain timeout in all, the one the grace period is sized for: a handler still
    # busy at it is cut, and the executions get what is left. They drain even if leaving failed (a
    # connection already closing); the failure is raised after.
    deadline = time.monotonic() + octavus.drain_s
    try:
        await bus.leave(subscribers, timeout_s=octavus.drain_s)
    finally:
        await octavus.stop(timeout_s=max(0.0, deadline - time.monotonic()))


def _agent_test_worker(deps: Deps, redis: Redis) -> AgentTestWorker:
    """Test runs: their own queue and limit; their conversations go through the session bus."""
    settings, js = deps.settings, deps.js

    async def publish(event: AgentTestEvent) -> None:
        await js.publish(
            subjects.agent_test_results(event.run_id),
            event.model_dump_json().encode(),
            headers=trace_headers({"Nats-Msg-Id": str(event.event_id)}),
        )

    runner_deps = RunnerDeps(
        checkpoints=CheckpointStore(redis, ttl_s=settings.runtime_agent_tests_checkpoint_ttl_s),
        agents=deps.agents,
        registry=deps.llm.registry,
        conversation=lambda conversation_id, after: BusConversation(
            deps.nc, js, conversation_id, connection_id=f"agent-test-{conversation_id}", after=after
        ),
        publish=publish,
        token=deps.token,
        default_model=settings.runtime_agent_tests_model,
        turn_timeout_s=settings.runtime_agent_tests_turn_timeout_s,
        max_attempts=settings.runtime_agent_tests_max_attempts,
    )
    return AgentTestWorker(
        js,
        runner_deps,
        max_concurrent=settings.runtime_agent_tests_max_concurrent,
        ack_wait_s=settings.runtime_agent_tests_ack_wait_s,
        heartbeat_s=settings.runtime_agent_tests_heartbeat_s,
    )
