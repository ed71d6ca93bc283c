"""Issue 13's figures from one run against `parley run`'s own processes, each beside its target.

`python -m bench.perf [--sessions N] [--turns N] [--levels 100,300,600] [--idle N] [--open-rate N] …`

Starts `parley run` (a fresh `--data-dir`, a free port, the built-in engine with
`PARLEY_RUNTIME_BUILTIN_PACE_MS=0`, tracing at its default sampling, no speech workers: they are
not on the text path) as a child process, reads the pids of everything it started from its
`run.json`, and measures, in this order:

1. **Latency**: turns over one realtime session through the edge (`input_text` → first
   `text_delta`) alternating with the same engine called in-process; p50/p99 added by the platform.
2. **CPU per turn**: `--sessions` sessions each sending a message every `--think-ms` (±20 %),
   `--turns` times; CPU time (user + system, children included: PostgreSQL's backends) of every
   process of the stack during that phase, divided by the turns answered. This figure does not
   depend on how loaded the machine is; latencies do.
3. **Capacity**: for each of `--levels`, that many active sessions (one message per `--think-ms`);
   p50/p99 turn latency (`input_text` → `turn_complete`) and the largest level under 100 ms p99.
4. **Admission and idle sessions**: `--idle` sessions opened at `--open-rate` per second
   (handshake → greeting complete), the rate achieved and how many failed; then, with all of them
   held idle, the resident memory each process grew by, per session, and the CPU each process
   spends per second while they stay silent (`--idle-hold` seconds: ticks, claim heartbeats,
   polling), also per session. By default 10,000 sessions, the target's count (memory per session
   at a thousand understates it, docs/performance.md, "The thirteenth round"), through as many
   edge processes as this machine's open-files limit needs (`--edges`, `edges_for`).
5. **auth.verify**: p50/p99 of a raw NATS request to `auth.verify` (what every cache miss costs)
   and of `AuthClient.verify` as callers use it (cached, revocation pushed over the bus).

The report begins with this machine's speed (`bench.machine`: a reference loop timed before the
stack starts and after it stops). The load generator runs in this process (its CPU is not counted;
its latency is part of every latency figure). On a shared machine compare the figures of one run
with each other, and use small levels for a short run, e.g. `--sessions 50 --turns 5 --levels 100
--idle 500`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

import psutil

from bench import realtime, sse_provider
from bench.client_loop import run_client
from bench.machine import MachineSpeed, reference_s
from bench.perf_report import (
    Admission,
    CpuPhase,
    KillReport,
    figures,
    report,
)
from bench.perf_stack import Stack, bus_requests, delta, edges_for, publish_agent
from bench.perf_verify import verify_phase
from bench.realtime import (
    Session,
    measure_capacity,
    measure_latency,
    next_text,
)
from parley_common import subjects
from parley_common.logging import setup_logging
from parley_devstack.servers import raise_descriptor_limit

# ------------------------------------------------------------------------------------ phases


async def cpu_phase(
    stack: Stack,
    ws_url: str,
    key: str,
    agent_id: str,
    *,
    sessions: int,
    turns: int,
    think_ms: float,
    idle_s: float = 4.0,
    kill: str | None = None,
    pace_ms: float = 0.0,
    engine: str = "built-in engine",
) -> CpuPhase:
    opening = asyncio.Semaphore(32)

    async def open_one() -> Session:
        async with opening:
            return await Session.open(ws_url, key, agent_id)

    opened = await asyncio.gather(*(open_one() for _ in range(sessions)))
    samples: list[float] = []
    timed: list[tuple[float, float]] = []  # (started, ms) of each turn answered
    failures: list[str] = []
    doubled = 0

    async def active(session: Session) -> None:
        nonlocal doubled
        await asyncio.sleep(random.uniform(0, think_ms / 1000))
        for _ in range(turns):
            started = time.perf_counter()
            try:
                ms = (await session.turn())[1]
            except Exception as exc:  # a turn lost (error event, socket gone, 60 s without answer)
                failures.append(f"{type(exc).__name__}: {str(exc)[:140]}")
                return
            samples.append(ms)
            timed.append((started, ms))
            await asyncio.sleep(think_ms / 1000 * random.uniform(0.8, 1.2))
        # For one second nothing more may come but ticks: another turn_complete would be a turn
        # answered twice. (One second in all: ticks come every second, so waiting for a second of
        # silence could last as long as the ticks kept their time, and the phase with it.)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        with suppress(TimeoutError):
            while (left := deadline - loop.time()) > 0:
                event = json.loads(await next_text(session.ws, left))
                if event["type"] in ("turn_complete", "text_delta", "text_full"):
                    doubled += 1

    killed_at: float | None = None

    async def kill_later() -> None:
        nonlocal killed_at
        await asyncio.sleep(turns * think_ms / 1000 / 2)  # mid-load
        victim = stack.processes[kill or ""]
        with suppress(psutil.Error):
            for proc in [*victim.children(recursive=True), victim]:
                proc.kill()
        killed_at = time.perf_counter()

    await asyncio.sleep(1.0)  # let the openings settle (persisted greetings, claims)
    # The same sessions, open and silent: ticks, claim heartbeats, polling loops, probes.
    idle_before, idle_started = stack.cpu(), time.perf_counter()
    await asyncio.sleep(idle_s)
    idle_rate = {
        k: v / (time.perf_counter() - idle_started) for k, v in delta(stack.cpu(), idle_before).items()
    }
    stack.toggle_profiles()
    before, before_each, gc_before = stack.cpu(), stack.cpu(by_process=True), stack.gc_seconds()
    started, client_before = time.perf_counter(), time.process_time()
    deltas_before = sum(s.deltas for s in opened)
    killer = asyncio.create_task(kill_later()) if kill else None
    await asyncio.gather(*(active(s) for s in opened))
    if killer is not None:
        await killer
    await asyncio.sleep(0.5)  # what a turn leaves behind (persisting its messages) belongs to it
    elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_before
    used, used_each = delta(stack.cpu(), before), delta(stack.cpu(by_process=True), before_each)
    gc_used = delta(stack.gc_seconds(), gc_before)
    await asyncio.to_thread(stack.toggle_profiles, "turns")
    await asyncio.gather(*(s.close() for s in opened), return_exceptions=True)
    phase = CpuPhase(sessions, len(samples), elapsed, used, samples, idle_rate, used_each)
    phase.client_cpu, phase.gc_s = client_cpu, gc_used
    phase.deltas, phase.pace_ms = sum(s.deltas for s in opened) - deltas_before, pace_ms
    phase.engine = engine
    if kill is not None and killed_at is not None:
        # Turns under way at the kill or started in the seconds after it: how long they stalled.
        around = [ms for t0, ms in timed if killed_at - 1.0 <= t0 <= killed_at + 5.0]
        phase.kill = KillReport(
            kill, sessions * turns, len(samples), failures, doubled, max(around or [0.0]), len(around)
        )
    return phase


async def admission_phase(
    stack: Stack,
    ws_url: str,
    key: str,
    agent_id: str,
    *,
    count: int,
    rate: float,
    hold_s: float = 0.0,
    settle_s: float = 3.0,
) -> Admission:
    await asyncio.sleep(2.0)
    rss_before = stack.memory()
    gateways = [stack.ports[n] for n in stack.processes if n.startswith("session_gateway")]

    def verifications() -> float:
        return sum(bus_requests(port, subjects.AUTH_VERIFY) for port in gateways)

    verifies = await asyncio.to_thread(verifications)
    held: list[Session] = []
    failures: list[str] = []
    open_ms: list[float] = []

    async def open_at(delay: float) -> None:
        await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            session = await Session.open(ws_url, key, agent_id)
            session.hold()  # read as a client does, or the server's keepalive closes it (realtime.py)
            held.append(session)
            open_ms.append((time.perf_counter() - started) * 1000)
        except Exception as exc:  # counted: refused, timed out, reset
            failures.append(f"{type(exc).__name__}: {str(exc)[:140]}")

    stack.toggle_profiles()
    gc_before = await asyncio.to_thread(stack.gc_seconds)
    started, cpu_before, client_before = time.perf_counter(), stack.cpu(), time.process_time()
    await asyncio.gather(*(open_at(i / rate) for i in range(count)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # what an opening leaves behind (its greeting's transcript) belongs to it
    open_cpu, client_cpu = delta(stack.cpu(), cpu_before), time.process_time() - client_before
    open_gc = delta(await asyncio.to_thread(stack.gc_seconds), gc_before)
    await asyncio.to_thread(stack.toggle_profiles, "admission")
    await asyncio.sleep(settle_s)  # garbage, buffers and caches settle before memory is read
    rss_after = stack.memory()
    open_at_rss = sum(s.is_open for s in held)
    spread = await asyncio.to_thread(stack.spread_of)
    verifies = await asyncio.to_thread(verifications) - verifies
    result = Admission(
        count, len(held), len(failures), elapsed, rss_before, rss_after, open_ms, verifies, failures, spread
    )
    result.open_cpu, result.client_cpu, result.open_gc = open_cpu, client_cpu, open_gc
    result.open_at_rss = open_at_rss
    if hold_s > 0:
        # Held open and silent: what the stack spends on them per second (ticks, heartbeats, polls).
        stack.toggle_profiles()
        idle_before, idle_started = stack.cpu(), time.perf_counter()
        await asyncio.sleep(hold_s)
        result.idle_rate = {
            k: v / (time.perf_counter() - idle_started) for k, v in delta(stack.cpu(), idle_before).items()
        }
        await asyncio.to_thread(stack.toggle_profiles, "idle")
    result.still_open = sum(s.is_open for s in held)  # closed meanwhile: not held
    closing = asyncio.Semaphore(200)

    async def close(s: Session) -> None:
        async with closing:
            with suppress(Exception):
                await s.close()

    await asyncio.gather(*(close(s) for s in held))
    return result


# ------------------------------------------------------------------------------------ main


async def run(args: Any, out: TextIO) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-perf-") as tmp:
        extra = dict(kv.split("=", 1) for kv in args.env)
        pace_ms, engine = float(extra.get("PARLEY_RUNTIME_BUILTIN_PACE_MS", 0)), "built-in engine"
        provider, provider_requests = None, None
        if args.provider == "openai":
            provider, base_url = await asyncio.to_thread(sse_provider.start, args.provider_pace_ms)
            extra = {**sse_provider.environment(base_url), **extra}
            pace_ms, engine = args.provider_pace_ms, "OpenAI-compatible SSE over HTTP (bench.sse_provider)"
        profile_dir: Path | None = args.profile
        stack = Stack(
            Path(tmp),
            workers=args.workers,
            extra_env=extra,
            profile_dir=profile_dir,
            gateways=args.gateways,
            nats_nodes=args.nats_cluster,
            edges=args.edges,
            python=args.stack_python or sys.executable,
        )
        before_s = await asyncio.to_thread(reference_s)  # before any process of the stack runs
        try:
            await asyncio.to_thread(stack.start)
            key, agent_id = await publish_agent(stack.url)
            first_gateway = next(n for n in stack.processes if n.startswith("session_gateway"))
            base = stack.url if not args.direct else f"http://127.0.0.1:{stack.ports[first_gateway]}"
            ws_url = base.replace("http://", "ws://") + "/realtime"
            print(f"stack up at {stack.url}; realtime via {ws_url}", file=sys.stderr, flush=True)
            latency = await measure_latency(
                ws_url, key, agent_id, iterations=args.iterations, warmup=args.warmup
            )
            cpu = await cpu_phase(
                stack,
                ws_url,
                key,
                agent_id,
                sessions=args.sessions,
                turns=args.turns,
                think_ms=args.think_ms,
                kill=args.kill_nats,
                pace_ms=pace_ms,
                engine=engine,
            )
            levels = (
                await measure_capacity(
                    ws_url, key, agent_id, levels=args.levels, turns=args.level_turns, think_ms=args.think_ms
                )
                if args.levels
                else []
            )
            admission = (
                await admission_phase(
                    stack, ws_url, key, agent_id, count=args.idle, rate=args.open_rate, hold_s=args.idle_hold
                )
                if args.idle
                else None
            )
            verify = await verify_phase(stack, key, iterations=args.verify_iterations)
        finally:
            await asyncio.to_thread(stack.stop)
            if provider is not None:
                provider_requests = await asyncio.to_thread(sse_provider.stop, provider)
            if args.keep_logs:
                dest = Path(args.keep_logs)
                shutil.copytree(stack.home / "logs", dest, dirs_exist_ok=True)
    cpu.provider_requests = provider_requests
    machine = MachineSpeed(before_s, await asyncio.to_thread(reference_s))
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(figures(cpu, admission), indent=2))
    report(
        latency=latency,
        cpu=cpu,
        levels=levels,
        admission=admission,
        verify=verify,
        think_ms=args.think_ms,
        machine=machine,
        out=out,
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = options()
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.levels = [level for level in args.levels if level > 0]  # `--levels 0`: no capacity phase
    if args.levels != sorted(args.levels):
        parser.error("--levels must be ascending")
    args.edges = args.edges or edges_for(args.idle)
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    raise_descriptor_limit()  # a socket per session held
    if args.message_bytes > len(realtime.MESSAGE):
        realtime.MESSAGE += " " + "x" * (args.message_bytes - len(realtime.MESSAGE) - 1)
    setup_logging("bench", "WARNING", json_output=False)
    run_client(run(args, sys.stdout))


def options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="runtime workers of parley run")
    parser.add_argument("--gateways", type=int, default=1, help="session gateways of parley run")
    parser.add_argument("--nats-cluster", type=int, default=1, metavar="N", help="NATS nodes of parley run")
    parser.add_argument(
        "--edges",
        type=int,
        default=0,
        help="Caddy processes of parley run on the edge's port, each holding two open files per socket"
        " (default: as many as --idle needs under this machine's open-files limit)",
    )
    parser.add_argument(
        "--kill-nats",
        metavar="NODE",
        help="SIGKILL this NATS node (nats, nats-2, …) halfway through the CPU phase; report losses, stall",
    )
    parser.add_argument("--iterations", type=int, default=200, help="latency turns per path")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=100, help="sessions of the CPU-per-turn phase")
    parser.add_argument("--turns", type=int, default=10, help="messages per session in the CPU phase")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="pause between a session's messages")
    parser.add_argument("--levels", type=_ints, default=[100, 300, 600], help="capacity levels, ascending")
    parser.add_argument("--level-turns", type=int, default=3, help="messages per session per level")
    parser.add_argument("--idle", type=int, default=10_000, help="idle sessions to open and hold (0: skip)")
    parser.add_argument("--open-rate", type=float, default=500.0, help="sessions opened per second")
    parser.add_argument(
        "--idle-hold",
        type=float,
        default=10.0,
        metavar="S",
        help="hold the admitted sessions open and silent this long, measuring the stack's CPU (0: skip)",
    )
    parser.add_argument("--verify-iterations", type=int, default=2000)
    parser.add_argument(
        "--message-bytes",
        type=int,
        default=0,
        help="pad each user message to this size (the answer echoes it)",
    )
    parser.add_argument("--direct", action="store_true", help="connect to the gateway, not through Caddy")
    parser.add_argument(
        "--provider",
        choices=["builtin", "openai"],
        default="builtin",
        help="the model: the built-in engine, or OpenAI's Chat Completions SSE from a local server"
        " (bench.sse_provider, a process of its own) through the runtime's HTTP provider",
    )
    parser.add_argument(
        "--provider-pace-ms", type=float, default=20.0, help="--provider openai: pause before each chunk"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for parley run (repeatable)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile every Python process during the CPU, admission and idle phases into DIR/<phase>/",
    )
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the stack's logs here at the end")
    parser.add_argument(
        "--stack-python",
        metavar="PATH",
        help="start parley run with this interpreter (another checkout's .venv/bin/python): its services,"
        " this bench's load and measurements (bench.perf_pair)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the CPU figures by process here as JSON")
    return parser


if __name__ == "__main__":
    main(sys.argv[1:])
