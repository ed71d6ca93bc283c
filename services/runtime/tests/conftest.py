"""A NATS server of a test module's own, for tests that need a bus no other module shares (no
real catalog answering `catalog.agent.resolve`, no other worker on the `runtime` consumer); the
Octavus support agent of the e2e tests, loaded, for the Octavus unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley_common.octavus import AgentBundle, load_definition, read_agent_dir
from parley_devstack.servers import NatsServer

OCTAVUS_AGENT = Path(__file__).parents[3] / "tests/e2e/octavus_agents/support"


@pytest.fixture(scope="module")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    await asyncio.to_thread(server.wait_ready, 30)
    yield server.url
    await asyncio.to_thread(server.stop)


@pytest.fixture(scope="session")
def bundle() -> AgentBundle:
    d = read_agent_dir(OCTAVUS_AGENT)
    loaded, _ = load_definition(d.protocol, d.settings.model_dump(), d.prompt_map())
    return loaded
