"""What the one-process NATS benchmarks share (`bench.ordered_reader`, `bench.input_path`): an
embedded nats-server of their own, and the median they report."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import nats
import psutil
from nats.aio.client import Client

from parley_devstack.servers import NatsServer


@contextlib.asynccontextmanager
async def embedded_nats(prefix: str) -> AsyncIterator[tuple[Client, psutil.Process]]:
    """A nats-server with JetStream in a directory of its own, a connection to it, and its process
    (for its CPU and memory); stopped, and the directory removed, on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            await asyncio.to_thread(server.wait_ready, 30)
            assert server.pid is not None
            nc = await nats.connect(server.url)
            try:
                yield nc, psutil.Process(server.pid)
            finally:
                await nc.close()
        finally:
            server.stop()


def median(values: Sequence[float]) -> float:
    """The middle value (the upper one of an even count), nan for none."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
