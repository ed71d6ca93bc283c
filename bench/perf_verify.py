"""`bench.perf`'s last phase: `auth.verify` over the bus (what a cache miss costs) against
`AuthClient.verify` as callers use it (cached, revocations pushed over the bus)."""

from __future__ import annotations

import time

from bench.perf_report import VerifyFigures
from bench.perf_stack import Stack
from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import VerifyReply, VerifyRequest
from parley_common.bus import make_broker, request
from parley_common.settings import CommonSettings


async def verify_phase(stack: Stack, key: str, *, iterations: int) -> VerifyFigures:
    settings = CommonSettings(nats_url=f"nats://127.0.0.1:{stack.ports['nats']}", service_name="bench")
    broker = make_broker(settings, name="bench-verify")
    client = AuthClient(broker)
    await broker.start()
    try:
        bus_ms: list[float] = []
        client_ms: list[float] = []
        req = VerifyRequest(credential=key)
        await client.verify(key)
        for i in range(iterations + 50):
            t0 = time.perf_counter()
            reply = await request(broker, subjects.AUTH_VERIFY, req, VerifyReply)
            t1 = time.perf_counter()
            await client.verify(key)
            t2 = time.perf_counter()
            if not reply.ok:
                raise RuntimeError(f"auth.verify refused the bench key: {reply.error}")
            if i >= 50:
                bus_ms.append((t1 - t0) * 1000)
                client_ms.append((t2 - t1) * 1000)
    finally:
        await broker.stop()
    return VerifyFigures(bus_ms, client_ms)
