"""A speech worker process: the bus handlers, the engines, and the small HTTP app for health.

The work arrives over NATS (handlers.py); HTTP is only there so orchestrators and the devstack
edge probe `/healthz` and `/readyz` the same way as for every other service. The worker is ready
once its offline models are loaded and NATS answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_common.bus import make_broker
from parley_common.health import Readiness, nats_check
from parley_common.http import create_app
from parley_speech import handlers
from parley_speech.agents import AgentSecrets
from parley_speech.engines.registry import EngineRegistry
from parley_speech.service import SpeechService
from parley_speech.settings import SpeechSettings, get_settings


def build_app(settings: SpeechSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    broker = make_broker(settings)
    stt_executor = ThreadPoolExecutor(settings.speech_stt_concurrency, thread_name_prefix="stt")
    vad_executor = ThreadPoolExecutor(settings.speech_vad_threads, thread_name_prefix="vad")
    agents = AgentSecrets(
        broker, ttl_s=settings.speech_agent_cache_ttl_s, timeout_s=settings.bus_request_timeout_s
    )
    registry = EngineRegistry(settings, stt_executor=stt_executor, agents=agents)
    service = SpeechService(settings, registry, vad_executor)
    handlers.register(broker, service, settings.service_name)

    loaded: list[bool] = []

    async def models_check() -> None:
        if not loaded:
            raise RuntimeError("speech models are loading")

    readiness = Readiness()
    readiness.add("nats", nats_check(broker))
    readiness.add("models", models_check)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        loaded.append(True)
        await broker.start()
        await service.start(broker.connection)
        try:
            yield
        finally:
            await service.stop()
            await broker.stop()
            await registry.aclose()
            stt_executor.shutdown(wait=False, cancel_futures=True)
            vad_executor.shutdown(wait=False, cancel_futures=True)

    app = create_app(
        settings,
        title="Parley speech worker",
        description="Health of a speech worker; recognition and synthesis are served over the bus.",
        lifespan=lifespan,
        readiness=readiness,
    )
    app.state.broker = broker
    app.state.service = service
    app.state.registry = registry
    return app
