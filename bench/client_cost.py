"""What a bench client costs its own process: websockets' asyncio client against `bench.lean_ws`.

`python -m bench.client_cost [--sessions N] [--hold-s S] [--rounds N]`

A server in a process of its own plays the gateway's part of an opening (the `handshake`
answered by `handshake_ok`, a greeting's `text_delta` and `turn_complete`), then ticks every
held socket every 100 ms, as the gateway does every second, and pings it every 2 s. For each
client in turn (alternating over the rounds) this process opens `--sessions` sessions, holds them
for `--hold-s` seconds, and closes them; it prints its own CPU (`time.process_time()`) per
opening and per tick read while held. The lean client (what `bench.realtime.Session` uses) reads
in the transport's callback with no task per socket; websockets' is driven as the bench's sessions
drove it before: `connect(..., proxy=None, ping_interval=None)` and a task reading each held one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from bench.client_loop import run_client
from bench.lean_ws import LeanSocket
from bench.realtime import next_text
from parley_devstack.servers import free_port

TICK_S = 0.1
HANDSHAKE = json.dumps({"type": "handshake", "agent_id": "a"})


async def serve(port: int) -> None:
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    async def session(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send('{"type": "handshake_ok"}')
        await ws.send('{"type": "text_delta", "chunk": "Hello, I am the benchmark agent."}')
        await ws.send('{"type": "turn_complete"}')
        with suppress(Exception):
            while True:
                await asyncio.sleep(TICK_S)
                await ws.send('{"type": "tick"}')

    async with ws_serve(session, "127.0.0.1", port, ping_interval=2.0, ping_timeout=20.0):
        print("ready", flush=True)
        await asyncio.Future()


async def _until_turn_complete(read: Any) -> None:
    while json.loads(await read())["type"] != "turn_complete":
        pass


async def lean_round(url: str, sessions: int, hold_s: float) -> tuple[float, float, int]:
    started = time.process_time()

    async def open_one() -> LeanSocket:
        ws = await LeanSocket.connect(url)
        ws.send(HANDSHAKE)
        await _until_turn_complete(lambda: next_text(ws, 30))
        ws.hold()
        return ws

    held = await asyncio.gather(*(open_one() for _ in range(sessions)))
    opened = time.process_time()
    await asyncio.sleep(hold_s)
    holding = time.process_time()
    still_open = sum(ws.is_open for ws in held)
    await asyncio.gather(*(ws.close() for ws in held))
    return opened - started, holding - opened, still_open


async def websockets_round(url: str, sessions: int, hold_s: float) -> tuple[float, float, int]:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    async def discard(ws: ClientConnection) -> None:
        with suppress(ConnectionClosed):
            while True:
                await ws.recv()

    started = time.process_time()

    async def open_one() -> tuple[ClientConnection, asyncio.Task[None]]:
        ws = await connect(url, max_size=None, open_timeout=60, proxy=None, ping_interval=None)
        await ws.send(HANDSHAKE)
        await _until_turn_complete(lambda: asyncio.wait_for(ws.recv(), 30))
        return ws, asyncio.create_task(discard(ws))

    held = await asyncio.gather(*(open_one() for _ in range(sessions)))
    opened = time.process_time()
    await asyncio.sleep(hold_s)
    holding = time.process_time()
    still_open = sum(ws.state is State.OPEN for ws, _ in held)

    async def close(ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        reader.cancel()
        await ws.close()

    await asyncio.gather(*(close(ws, reader) for ws, reader in held))
    return opened - started, holding - opened, still_open


def start_server() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.client_cost", "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server, port


async def run(sessions: int, hold_s: float, rounds: int) -> None:
    server, port = await asyncio.to_thread(start_server)
    try:
        url = f"ws://127.0.0.1:{port}/realtime?token=k"
        ticks = sessions * hold_s / TICK_S
        print(f"{sessions} sessions opened at once, held {hold_s:g} s ({ticks:.0f} ticks read)")
        print("round  client      µs per opening  µs per tick read  open after the hold")
        figures: dict[str, list[tuple[float, float]]] = {"websockets": [], "lean": []}
        for i in range(rounds):
            order = ("websockets", "lean") if i % 2 == 0 else ("lean", "websockets")
            for name in order:
                measure = websockets_round if name == "websockets" else lean_round
                opening, holding, still_open = await measure(url, sessions, hold_s)
                figures[name].append((opening / sessions * 1e6, holding / ticks * 1e6))
                per_open, per_tick = figures[name][-1]
                print(f"{i + 1:>5}  {name:<10}  {per_open:>14.1f}  {per_tick:>16.2f}  {still_open:>19}")
                await asyncio.sleep(0.5)
        for what, k in (("per opening", 0), ("per tick read", 1)):
            ws = statistics.median(f[k] for f in figures["websockets"])
            lean = statistics.median(f[k] for f in figures["lean"])
            print(f"median {what}: websockets {ws:.1f} µs, lean {lean:.1f} µs, ratio {lean / ws:.2f}")
    finally:
        server.terminate()
        server.wait(10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--hold-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server's process
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
    else:
        run_client(run(args.sessions, args.hold_s, args.rounds))


if __name__ == "__main__":
    main()
