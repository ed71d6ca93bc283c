"""HTTP app and bus wiring of the session gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.authenticator import install_authenticator
from parley_common.kit.service import ServiceKit
from parley_common.ratelimit import RateLimiter
from parley_common.redis_client import RedisLine
from parley_common.session_contract import ensure_streams
from parley_common.tasks import cancel_and_wait
from parley_session_gateway import bus
from parley_session_gateway.agent_access import AgentAccess
from parley_session_gateway.chat.router import router as chat_router
from parley_session_gateway.live import LiveConnections
from parley_session_gateway.octavus.router import router as octavus_router
from parley_session_gateway.realtime.router import router as realtime_router
from parley_session_gateway.sessions import GatewayContext
from parley_session_gateway.settings import GatewaySettings, get_settings
from parley_session_gateway.socket_lane import LanedApp, socket_endpoints
from parley_session_gateway.webrtc.media import BusMediaEdge
from parley_session_gateway.webrtc.router import router as webrtc_router

# The streams this gateway writes to or reads from (runtimes declare the same definitions).
STREAMS = (subjects.SESSIONS_STREAM, subjects.SESSION_IN_STREAM, subjects.SESSION_OUT_STREAM)


def build_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    kit = ServiceKit(settings, redis=True)
    broker, redis = kit.broker, kit.redis
    auth = AuthClient(
        broker, cache_ttl_s=settings.gateway_auth_cache_ttl_s, timeout_s=settings.bus_request_timeout_s
    )
    live = LiveConnections(auth, settings.gateway_reverify_interval_s)
    access = AgentAccess(broker, ttl_s=settings.gateway_agent_access_cache_ttl_s)
    bus.listen_revocations(auth, live)
    line = RedisLine(redis.connection_pool)

    @kit.part
    @asynccontextmanager
    async def backstop(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run(), name="reverify-connections")
        try:
            await ensure_streams(broker.connection.jetstream(), STREAMS)
            yield
        finally:
            try:
                await cancel_and_wait(task)
            finally:
                await line.aclose()

    routers = [realtime_router, chat_router, octavus_router, webrtc_router]
    app = kit.build_app(
        title="Parley session gateway",
        description="Realtime WebSocket, chat WebSocket and agent-session streaming endpoints.",
        routers=routers,
        app_class=LanedApp,
    )
    # In front of the whole app: the sockets skip the layers that only serve HTTP (socket_lane.py).
    assert isinstance(app, LanedApp)
    app.add_socket_lane(socket_endpoints(routers), header_limit=settings.max_header_bytes)
    app.state.realtime = GatewayContext(
        settings=settings, broker=broker, auth=auth, redis=redis, live=live, access=access, line=line
    )
    app.state.voice_limiter = RateLimiter(
        settings.redis_url, redis.connection_pool, key_prefix="parley:gw:rl"
    )
    if settings.gateway_webrtc_media:
        app.state.webrtc_media = BusMediaEdge(
            broker,
            auth,
            token_ttl_s=settings.gateway_webrtc_token_ttl_s,
            answer_timeout_s=settings.gateway_webrtc_answer_timeout_s,
        )
    install_authenticator(app, auth, cookie_name=settings.gateway_cookie_name)
    return app
