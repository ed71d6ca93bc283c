"""Fixtures shared by parley_common's tests."""

from __future__ import annotations

import ast
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from parley_devstack.servers import ValkeyServer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def app_sources() -> list[tuple[str, ast.Module]]:
    """Every app source file (libs' and services' `src`), by its path from the repository's root,
    parsed: what the guards against a construct in our code walk."""
    paths = sorted([*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")])
    return [(str(p.relative_to(ROOT)), ast.parse(p.read_text(encoding="utf-8"))) for p in paths]


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Redis-compatible server of the test's own, nothing kept on disk."""
    server = ValkeyServer(tmp_path / "valkey", persistent=False, log_path=tmp_path / "valkey.log")
    server.start()
    server.wait_ready(30)
    yield server
    server.stop()


@dataclass
class ScratchStream:
    nc: Client
    js: JetStreamContext
    name: str
    subject: str


@pytest.fixture
async def scratch_stream(infra: Any) -> AsyncIterator[ScratchStream]:
    """A stream of the test's own (one subject) on the test NATS, and a connection to it; the
    stream is deleted and the connection closed after the test."""
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"test.{name}"]))
    try:
        yield ScratchStream(nc, js, name, f"test.{name}")
    finally:
        await js.delete_stream(name)
        await nc.close()
