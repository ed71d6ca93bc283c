"""A speech worker process: the bus handlers, the engines, and the small HTTP app for health.

The work arrives over NATS (bus.py); HTTP is only there so orchestrators and the devstack
edge probe `/healthz` and `/readyz` the same way as for every other service. The worker is ready
once its offline models are loaded and NATS answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_common.kit.service import ServiceKit
from parley_speech import bus
from parley_speech.agents import AgentSecrets
from parley_speech.engines.registry import EngineRegistry
from parley_speech.service import SpeechService
from parley_speech.settings import SpeechSettings, get_settings


def build_app(settings: SpeechSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    stt_executor = ThreadPoolExecutor(settings.speech_stt_concurrency, thread_name_prefix="stt")
    vad_executor = ThreadPoolExecutor(settings.speech_vad_threads, thread_name_prefix="vad")
    kit = ServiceKit(settings)
    agents = AgentSecrets(
        kit.broker, ttl_s=settings.speech_agent_cache_ttl_s, timeout_s=settings.bus_request_timeout_s
    )
    registry = EngineRegistry(settings, stt_executor=stt_executor, agents=agents)
    speech = SpeechService(settings, registry, vad_executor)
    bus.register(kit.broker, speech, agents)
    kit.health_info = lambda: {"worker_id": speech.worker_id, "sessions": len(speech.sessions)}

    loaded: list[bool] = []

    async def models_check() -> None:
        if not loaded:
            raise RuntimeError("speech models are loading")

    kit.add_check("models", models_check)

    @kit.before_broker
    @asynccontextmanager
    async def engines(_: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        loaded.append(True)
        try:
            yield
        finally:
            await registry.aclose()
            stt_executor.shutdown(wait=False, cancel_futures=True)
            vad_executor.shutdown(wait=False, cancel_futures=True)

    @kit.part
    @asynccontextmanager
    async def sessions(_: FastAPI) -> AsyncIterator[None]:
        await speech.start(kit.broker.connection)
        try:
            yield
        finally:
            await speech.stop()

    app = kit.build_app(
        title="Parley speech worker",
        description="Health of a speech worker; recognition and synthesis are served over the bus.",
    )
    app.state.service = speech
    app.state.registry = registry
    return app
