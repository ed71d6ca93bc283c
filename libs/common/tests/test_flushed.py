"""`parley_common.bus.flushed`: the PING that confirms a publish follows it on the wire.

A server of the test's own, speaking just enough of the NATS protocol (INFO, then a PONG for every
PING), records what a nats-py client writes, in order. nats-py's own `flush()` writes its PING
before a message published just before it (which waits for the client's flusher task); the
catalog relied on that PONG to mean "the gateways hold the agent's event", and once in CI a
gateway used a deleted agent's kept answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import nats
import pytest
from nats.aio.client import Client

from parley_common.bus import flushed


@asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback NATS server that answers every PING and records each command's first line."""
    lines: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "test", "version": "2.10.0", "proto": 1, "max_payload": 1 << 20, "headers": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        while line := await reader.readline():
            command = line.decode().strip()
            lines.append(command)
            if command.startswith(("PUB ", "HPUB ")):
                await reader.readline()  # the payload (short, one line here)
            elif command == "PING":
                writer.write(b"PONG\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], lines
    finally:
        server.close()


async def wire_order(confirm: Callable[[Client], Awaitable[None]]) -> list[str]:
    """What the server read, from the publish on: PUB and PING, in the order they came."""
    async with recording_server() as (port, lines):
        nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
        try:
            await nc.flush()  # connected, nothing pending
            start = len(lines)
            await nc.publish("catalog.events.agent.deleted", b"gone")
            await confirm(nc)
            return [line.split(" ")[0] for line in lines[start:]]
        finally:
            await nc.close()


async def test_the_ping_that_confirms_a_publish_comes_after_it() -> None:
    assert await wire_order(flushed) == ["PUB", "PING"]


async def test_nats_pys_own_flush_sends_its_ping_first() -> None:
    # Why `flushed` exists: the PONG of this PING says nothing of the message. If nats-py orders
    # them one day, this fails, and `flushed` can become `nc.flush()` again.
    async def flush(nc: Client) -> None:
        await nc.flush()
        await asyncio.sleep(0.05)  # the flusher writes the PUB afterwards

    assert await wire_order(flush) == ["PING", "PUB"]


async def test_a_server_that_does_not_read_times_it_out() -> None:
    """The catalog answers a change within the timeout even when NATS stops reading its socket:
    `flushed` raises and the caller carries on (the events wait in the client's buffer)."""
    async with recording_server() as (port, _):
        nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
        try:
            await nc.flush()

            async def stuck() -> None:  # the flusher, blocked as on a socket NATS does not read
                await asyncio.Event().wait()

            nc._flusher_task.cancel()  # type: ignore[union-attr]
            nc._flusher_task = asyncio.create_task(stuck())
            await nc.publish("catalog.events.agent.deleted", b"gone")
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await flushed(nc, timeout=1)
            assert asyncio.get_running_loop().time() - started < 3
        finally:
            nc._flusher_task.cancel()  # type: ignore[union-attr]
            await nc.close()
