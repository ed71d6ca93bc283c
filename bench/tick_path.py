"""What the gateway's process spends on one `tick` to one held socket, the frame written as before
change 81 (a datetime per tick, websockets' `send_text`, collected for the loop turn's end one
socket at a time) and as now (the group's one clock reading, `corked_ws.text_frame`, written with
the other sockets' ticks at the turn's end, `Burst`), in one process; and what reading them costs
the client.

    python -m bench.tick_path [--sockets 2000] [--rounds 5] [--ticks 20]

A uvicorn server with the gateway's `CorkedWebSocketsProtocol` holds `--sockets` WebSockets opened
by a client in another process, which reads and drops what it is sent. Each round ticks every
socket `--ticks` times the old way, framed here but collected the old way, and as now (the order
alternating), and prints this process's CPU per tick of each (its write system calls included)
and the client's (psutil, whose clock counts in 10 ms steps). See docs/performance.md, "Ticks:
one clock reading a group, the frame made here, the group's writes together".
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from bench._options import int_options
from bench.client_loop import run_client
from parley_devstack.servers import free_port
from parley_session_gateway.corked_ws import SEND_TEXT_NOW, CorkedWebSocketsProtocol
from parley_session_gateway.realtime.connection import tick_json


class Held:
    """The sockets held: each one's `SEND_TEXT_NOW`, and `all_in` once `wanted` are."""

    def __init__(self, wanted: int) -> None:
        self.wanted, self.sends, self.all_in = wanted, list[Any](), asyncio.Event()

    async def hold(self, websocket: WebSocket) -> None:
        """The server's route: accept, keep the socket's `SEND_TEXT_NOW`, wait for the client to go."""
        await websocket.accept()
        self.sends.append(websocket.scope["extensions"][SEND_TEXT_NOW])
        if len(self.sends) == self.wanted:
            self.all_in.set()
        await websocket.receive()


def _clients(port: int, count: int, ready: Any, done: Any, received: Any) -> None:
    async def main() -> None:
        from websockets.asyncio.client import connect

        sockets = [await connect(f"ws://127.0.0.1:{port}/ws", compression=None) for _ in range(count)]
        readers = [asyncio.create_task(_drain(ws)) for ws in sockets]
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, done.wait)
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()

    async def _drain(ws: Any) -> None:
        frames = 0
        try:
            async for _ in ws:
                frames += 1
        finally:
            with received.get_lock():
                received.value += frames

    run_client(main())


def old_tick(started: datetime, deadline: datetime) -> Callable[[Any], None]:
    """A tick as the gateway sent one before change 81: its datetimes, websockets' framing, collected."""

    def tick(send_now: Any) -> None:
        now = datetime.now(UTC)
        remaining = (deadline - now).total_seconds()
        elapsed = (now - started).total_seconds()
        text = tick_json(max(0, int(remaining * 1000)), max(0, int(elapsed * 1000)))
        protocol = send_now.__self__
        protocol.conn.send_text(text.encode())
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))

    return tick


def new_tick(started: float, deadline: float, alone: bool = True) -> Callable[[Any, float], None]:
    """A tick as change 81 sends one (`alone=False`: framed here but collected for the turn's end)."""

    def tick(send_now: Any, now: float) -> None:
        text = tick_json(max(0, int((deadline - now) * 1000)), max(0, int((now - started) * 1000)))
        if not send_now(text, alone):
            raise RuntimeError("a tick was declined: the figures would leave out its write")

    return tick


async def measure(sockets: int, rounds: int, ticks: int) -> None:
    port, held = free_port(), Held(sockets)
    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/ws", held.hold)]),
        host="127.0.0.1",
        port=port,
        ws=CorkedWebSocketsProtocol,
        ws_per_message_deflate=False,
        log_config=None,
        lifespan="off",
        backlog=4096,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.01)
    ctx = multiprocessing.get_context("spawn")
    ready, done, received = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    clients = ctx.Process(target=_clients, args=(port, sockets, ready, done, received))
    clients.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ready.wait)
    await held.all_in.wait()
    started = datetime.now(UTC) - timedelta(seconds=30)
    deadline = started + timedelta(minutes=10)
    old = old_tick(started, deadline)
    variants = {
        "collected": new_tick(started.timestamp(), deadline.timestamp(), alone=False),
        "new": new_tick(started.timestamp(), deadline.timestamp()),
    }

    reader = psutil.Process(clients.pid)

    def reader_cpu() -> float:
        times = reader.cpu_times()
        return float(times.user + times.system)

    async def run(variant: str) -> tuple[float, float]:
        """This process's and the reading client's CPU per tick, in µs."""
        cpu, read_before = 0.0, reader_cpu()
        for _ in range(ticks):
            await asyncio.sleep(0.05)  # the client reads; the sockets' buffers stay empty
            began = time.process_time()
            if variant == "old":
                for send_now in held.sends:
                    old(send_now)
            else:
                new, now = variants[variant], time.time()
                for send_now in held.sends:
                    new(send_now, now)
            await asyncio.sleep(0)  # the collected writes go out at the loop turn's end
            cpu += time.process_time() - began
        await asyncio.sleep(0.05)  # the client reads the last ones
        read = reader_cpu() - read_before
        return cpu / (ticks * sockets) * 1e6, read / (ticks * sockets) * 1e6

    print(f"{sockets} sockets, {ticks} ticks each per variant and round; µs of CPU per tick")
    print("        this process (the gateway's part)                 the client reading")
    print("round  before  framed here, collected  change 81  ratio   before  collected  change 81")
    for index in range(rounds):
        order = ("old", "collected", "new") if index % 2 == 0 else ("new", "collected", "old")
        figures = {variant: await run(variant) for variant in order}
        (before, read_before), (collected, read_collected), (after, read_after) = (
            figures["old"],
            figures["collected"],
            figures["new"],
        )
        print(
            f"{index + 1:5}  {before:6.2f}  {collected:22.2f}  {after:9.2f}  {after / before:.2f}"
            f"   {read_before:6.2f}  {read_collected:9.2f}  {read_after:9.2f}"
        )
    await asyncio.sleep(1)  # the last ticks reach the client
    done.set()
    await loop.run_in_executor(None, clients.join, 30)
    print(f"frames the client read: {received.value} of {3 * rounds * ticks * sockets} sent")
    server.should_exit = True
    await asyncio.wait_for(serving, 30)


def main(argv: Sequence[str] | None = None) -> None:
    args = int_options(__doc__, argv, sockets=2000, rounds=5, ticks=20)
    run_client(measure(args.sockets, args.rounds, args.ticks))


if __name__ == "__main__":
    main()
