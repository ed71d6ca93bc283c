"""A NATS server of a test module's own, for tests that need a bus no other module shares (no
real catalog answering `catalog.agent.resolve`, no other worker on the `runtime` consumer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parley_devstack.servers import NatsServer


@pytest.fixture(scope="module")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    yield server.url
    await asyncio.to_thread(server.stop)
