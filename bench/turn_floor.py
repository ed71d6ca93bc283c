"""What the architecture's hops alone cost a text turn on this machine, beside what Parley costs,
in one run: issue 13's CPU-per-turn figure for `parley run`, and for stand-ins that make the
same hops with nothing of Parley's own work (`bench._floor_parts`).

    python -m bench.turn_floor [--sessions 100] [--turns 20] [--workers 2]
                               [--open 2000] [--open-rate 500] [--no-stack]

The floor's processes: Caddy with the edge's own configuration, nats-server with Parley's
streams (`SESSION_IN`, `SESSION_OUT`, `CONVERSATIONS`), Valkey and PostgreSQL as `parley run`
starts them, and the three stand-ins (a gateway, `--workers` workers, a catalog). The load is
`bench.perf`'s CPU phase: `--sessions` WebSockets through the edge, each sending a message every
`--think-ms` for `--turns` turns and waiting for its `turn_complete`, after the same sessions sat
silent for 4 s (the idle rate, for the marginal figure); then `--open` sessions opened at
`--open-rate`, each until its greeting's `turn_complete` (`bench.perf`'s admission phase). Then,
unless `--no-stack`, `bench.perf`'s two phases themselves on `parley run`, with the same sessions,
turns and openings. Printed: each side's CPU ms per turn and per opening by process, the whole
stack's, and Parley's against the floor's (the ratio of the same run).
See docs/performance.md, "The hops alone: a floor for a turn".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psutil

from bench._floor_parts import READY
from bench.client_loop import run_client
from bench.lean_ws import LeanSocket
from bench.machine import MachineSpeed, reference_s
from bench.perf import admission_phase, cpu_phase
from bench.perf_report import CpuPhase
from bench.perf_stack import Stack, cpu_seconds, delta, group_of, publish_agent
from parley_devstack.edge import CaddyServer
from parley_devstack.postgres import PostgresServer
from parley_devstack.servers import (
    ManagedProcess,
    NatsServer,
    ValkeyServer,
    free_port,
    raise_descriptor_limit,
    stop_all,
)

MESSAGE = json.dumps(
    {"type": "input_text", "text": "How long does a message take to come back through the whole platform?"}
)
TARGET_MS = 2.5
OPEN_TARGET = 500
IDLE_S = 4.0


class Floor:
    """The floor's processes, started in order; their CPU by the names the report shows."""

    def __init__(self, home: Path, workers: int) -> None:
        self.home, self.workers = home, workers
        self.processes: dict[str, ManagedProcess] = {}
        self.gateway_port = free_port()
        self.edge: CaddyServer | None = None

    def start(self) -> None:
        logs = self.home / "logs"
        nats = NatsServer(self.home / "nats", log_path=logs / "nats.log")
        valkey = ValkeyServer(self.home / "valkey", persistent=True, log_path=logs / "valkey.log")
        pg = PostgresServer(self.home / "pg", durable=True, log_path=logs / "postgres.log")
        pg.init()
        for server in (nats, valkey, pg):
            self._run(server)
        part = [sys.executable, "-m", "bench._floor_parts"]
        argv = [*part, "gateway", "--nats", nats.url, "--port", str(self.gateway_port)]
        argv += ["--redis-port", str(valkey.port)]
        self._run(ManagedProcess("gateway", argv, log_path=logs / "gateway.log"))
        for i in range(1, self.workers + 1):
            argv = [*part, "worker", "--nats", nats.url, "--redis-port", str(valkey.port)]
            self._run(ManagedProcess(f"runtime-{i}", argv, log_path=logs / f"runtime-{i}.log"))
        argv = [*part, "catalog", "--nats", nats.url, "--database", pg.url()]
        self._run(ManagedProcess("catalog", argv, log_path=logs / "catalog.log"))
        self.edge = CaddyServer(
            self.home / "caddy",
            port=free_port(),
            upstreams={"session_gateway": f"127.0.0.1:{self.gateway_port}"},
            log_path=logs / "caddy.log",
        )
        self._run(self.edge)

    def _run(self, process: ManagedProcess) -> None:
        """Start `process` and wait until it serves (a stand-in: until it says `ready`)."""
        process.start()
        self.processes[process.name] = process
        if type(process) is not ManagedProcess:
            process.wait_ready(60)
            return
        assert process.log_path is not None
        deadline = time.monotonic() + 60
        while READY not in process.log_path.read_text():
            process.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_all(reversed(list(self.processes.values())))

    @property
    def ws_url(self) -> str:
        """A session's socket through the edge, less its id."""
        assert self.edge is not None
        return f"ws://127.0.0.1:{self.edge.port}/realtime?s="

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process, its children included (PostgreSQL's backends)."""
        out: dict[str, float] = {}
        for name, process in self.processes.items():
            group = group_of(name)  # as bench.perf names them, so that the two sides' rows meet
            with suppress(psutil.Error):
                root = psutil.Process(process.pid)
                for p in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        out[group] = out.get(group, 0.0) + cpu_seconds(p)
        return out


async def floor_phase(floor: Floor, *, sessions: int, turns: int, think_ms: float) -> CpuPhase:
    sockets = [await LeanSocket.connect(f"{floor.ws_url}{i:08x}") for i in range(sessions)]
    samples: list[float] = []

    async def turn(ws: LeanSocket) -> float:
        started = time.perf_counter()
        ws.send(MESSAGE)
        while '"turn_complete"' not in await ws.recv():
            pass
        return (time.perf_counter() - started) * 1000

    async def active(ws: LeanSocket) -> None:
        await asyncio.sleep(random.uniform(0, think_ms / 1000))
        for _ in range(turns):
            async with asyncio.timeout(60):
                samples.append(await turn(ws))
            await asyncio.sleep(think_ms / 1000 * random.uniform(0.8, 1.2))

    async def drain(ws: LeanSocket) -> None:
        while True:
            await ws.recv()  # ticks while silent

    await asyncio.sleep(1.0)
    idle = [asyncio.create_task(drain(ws)) for ws in sockets]
    idle_before, idle_started = floor.cpu(), time.perf_counter()
    await asyncio.sleep(IDLE_S)
    idle_s = time.perf_counter() - idle_started
    idle_rate = {k: v / idle_s for k, v in delta(floor.cpu(), idle_before).items()}
    for task in idle:
        task.cancel()
    before, started = floor.cpu(), time.perf_counter()
    await asyncio.gather(*(active(ws) for ws in sockets))
    await asyncio.sleep(0.5)  # what a turn leaves behind (the catalog's batch) belongs to it
    elapsed, used = time.perf_counter() - started, delta(floor.cpu(), before)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return CpuPhase(sessions, len(samples), elapsed, used, samples, idle_rate)


@dataclass
class Openings:
    """Sessions opened at a rate, each until its greeting's `turn_complete`."""

    asked: int
    opened: int
    seconds: float
    cpu_s: dict[str, float]

    def per_opening_ms(self) -> dict[str, float]:
        return {k: v * 1000 / max(self.opened, 1) for k, v in self.cpu_s.items()}


async def floor_openings(floor: Floor, *, count: int, rate: float) -> Openings:
    held: list[LeanSocket] = []

    async def open_at(i: int) -> None:
        await asyncio.sleep(i / rate)
        with suppress(Exception):  # not opened: counted
            async with asyncio.timeout(30):
                ws = await LeanSocket.connect(f"{floor.ws_url}o{i:07x}")
                while '"turn_complete"' not in await ws.recv():
                    pass
            ws.hold()
            held.append(ws)

    before, started = floor.cpu(), time.perf_counter()
    await asyncio.gather(*(open_at(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # what an opening leaves behind (the catalog's batch) belongs to it
    used = delta(floor.cpu(), before)
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return Openings(count, len(held), elapsed, used)


async def stack_phase(home: Path, args: argparse.Namespace) -> tuple[CpuPhase, Openings | None]:
    """`bench.perf`'s CPU phase on `parley run` (built-in engine, zero pace), then its admission
    phase with the same openings as the floor's."""
    await asyncio.to_thread(home.mkdir, parents=True)
    stack = Stack(home, workers=args.workers, extra_env={}, python=sys.executable)
    try:
        await asyncio.to_thread(stack.start)
        key, agent_id = await publish_agent(stack.url)
        ws_url = stack.url.replace("http://", "ws://") + "/realtime"
        turns = await cpu_phase(
            stack, ws_url, key, agent_id, sessions=args.sessions, turns=args.turns, think_ms=args.think_ms
        )
        if not args.open:
            return turns, None
        admitted = await admission_phase(
            stack, ws_url, key, agent_id, count=args.open, rate=args.open_rate, settle_s=0.0
        )
        return turns, Openings(admitted.asked, admitted.admitted, admitted.seconds, admitted.open_cpu)
    finally:
        await asyncio.to_thread(stack.stop)


def _table(
    unit: str, sides: list[dict[str, float]], marginal: list[dict[str, float]] | None, out: TextIO
) -> None:
    """Each process's figure on each side (the floor, then parley run), the whole stack last."""
    names = sorted({n for side in sides for n in side}, key=lambda n: -max(s.get(n, 0.0) for s in sides))
    head = f"{'process':24}{'floor ' + unit:>16}" + (f"{'marginal':>10}" if marginal else "")
    if len(sides) > 1:
        head += f"{'parley ' + unit:>16}" + (f"{'marginal':>10}" if marginal else "")
    print(head, file=out)
    for name in [*names, "whole stack"]:
        cells = ""
        for i, side in enumerate(sides):
            columns = [side] + ([marginal[i]] if marginal else [])
            for j, figures in enumerate(columns):
                value = sum(figures.values()) if name == "whole stack" else figures.get(name)
                cells += f"{'-' if value is None else f'{value:.3f}':>{10 if j else 16}}"
        print(f"{name:24}{cells}", file=out)


def report(
    floor: CpuPhase,
    stack: CpuPhase | None,
    machine: MachineSpeed,
    out: TextIO,
    openings: tuple[Openings, Openings | None] | None = None,
) -> None:
    print("== This machine", file=out)
    print(machine.line(), file=out)
    print(file=out)
    print("== CPU per text turn: the hops alone (the floor) and parley run", file=out)
    print(
        f"{floor.sessions} sessions x one message per second; the floor {floor.turns} turns "
        f"(p50 {_pct(floor.latencies, 50):.1f} ms, p99 {_pct(floor.latencies, 99):.1f} ms)"
        + (f", parley run {stack.turns}" if stack else ""),
        file=out,
    )
    phases = [floor, *([stack] if stack else [])]
    _table("ms/turn", [p.per_turn_ms() for p in phases], [p.marginal_ms() for p in phases], out)
    floor_ms = sum(floor.per_turn_ms().values())
    print(
        f"the floor, whole stack: {floor_ms:.3f} ms a turn, {floor_ms / TARGET_MS:.2f} times the "
        f"target of {TARGET_MS} ms",
        file=out,
    )
    if stack:
        parley_ms = sum(stack.per_turn_ms().values())
        print(
            f"parley run, whole stack: {parley_ms:.3f} ms a turn, {parley_ms / floor_ms:.2f} times "
            f"the floor (Parley's own work: {parley_ms - floor_ms:.3f} ms; the target leaves it "
            f"{max(0.0, TARGET_MS - floor_ms):.3f})",
            file=out,
        )
    print(
        "ms/turn: all CPU of the phase / turns answered; marginal: beyond the rate of the same "
        "sessions open and silent",
        file=out,
    )
    if openings is None:
        return
    print(file=out)
    print("== CPU per session opened (handshake to the greeting's turn_complete)", file=out)
    opened = [o for o in openings if o is not None]
    for name, o in zip(["the floor", "parley run"], opened, strict=False):
        print(
            f"{name}: {o.opened} of {o.asked} opened in {o.seconds:.1f} s, {o.opened / o.seconds:.0f}/s",
            file=out,
        )
    _table("ms/open", [o.per_opening_ms() for o in opened], None, out)
    floor_open = sum(opened[0].per_opening_ms().values())
    print(
        f"the floor, whole stack: {floor_open:.3f} ms an opening: two cores open at most "
        f"{2000 / floor_open:.0f} a second (target {OPEN_TARGET}/s)",
        file=out,
    )
    if len(opened) > 1:
        parley_open = sum(opened[1].per_opening_ms().values())
        print(
            f"parley run, whole stack: {parley_open:.3f} ms an opening, {parley_open / floor_open:.2f} "
            "times the floor",
            file=out,
        )


def _pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)] if ordered else float("nan")


async def run(args: argparse.Namespace, out: TextIO) -> None:
    raise_descriptor_limit()  # the processes started inherit it: a socket is a file in each
    before_s = await asyncio.to_thread(reference_s)
    with tempfile.TemporaryDirectory(prefix="parley-bench-floor-") as tmp:
        floor = Floor(Path(tmp) / "floor", args.workers)
        try:
            await asyncio.to_thread(floor.start)
            measured = await floor_phase(
                floor, sessions=args.sessions, turns=args.turns, think_ms=args.think_ms
            )
            floor_opened = (
                await floor_openings(floor, count=args.open, rate=args.open_rate) if args.open else None
            )
        finally:
            await asyncio.to_thread(floor.stop)
        stack, stack_opened = (None, None) if args.no_stack else await stack_phase(Path(tmp) / "stack", args)
    machine = MachineSpeed(before_s, await asyncio.to_thread(reference_s))
    report(measured, stack, machine, out, (floor_opened, stack_opened) if floor_opened else None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20, help="messages per session")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="pause between a session's messages")
    parser.add_argument(
        "--workers", type=int, default=2, help="runtime workers (the floor's and parley run's)"
    )
    parser.add_argument("--open", type=int, default=2000, help="sessions to open at --open-rate (0: skip)")
    parser.add_argument("--open-rate", type=float, default=500.0, help="sessions opened per second")
    parser.add_argument("--no-stack", action="store_true", help="the floor only, not parley run")
    args = parser.parse_args(argv)
    run_client(run(args, sys.stdout))


if __name__ == "__main__":
    main()
