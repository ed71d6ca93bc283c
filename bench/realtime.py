# One piece (460 lines): one benchmark run end to end (stack, warm-up, latency, capacity, report);
# its phases share the stack and the figures they print side by side.
"""Realtime path latency and capacity: one gateway and two runtime workers, built-in engine, zero pace.

`python -m bench.realtime [--iterations N] [--warmup N] [--levels 25,50,…] [--turns N] [--think-ms N]`

Starts its own NATS, Redis and PostgreSQL with `parley_devstack.testing.infra()` (which uses
`NATS_URL` / `REDIS_URL` / `DATABASE_URL` instead when set, always with a fresh database), migrates
auth and catalog, and runs auth, catalog, one session gateway and two runtime workers as processes
of their own (`python -m …`), like `parley run`. It signs up a user and publishes a chat agent
(START → DIALOG answering every message with the LLM) through the HTTP APIs; the runtimes use the
built-in engine with `PARLEY_RUNTIME_BUILTIN_PACE_MS=0`.

1. Latency. N turns over one WebSocket session (`input_text` → first `text_delta`, and →
   `turn_complete`) alternate with N in-process calls of the same engine with the request the
   runtime builds for that turn (`BuiltinProvider.stream`: → first `TextDelta`, → `Finish`). It
   prints p50/p99 of both, what the full path adds, and the ratio full path / in-process.
2. Capacity. For each level of concurrent sessions, every session is active: it sends a message,
   waits for `turn_complete`, thinks for `--think-ms` (±20 %), and again, `--turns` times. It
   prints p50/p99 turn latency (`input_text` → `turn_complete`) per level and the largest level
   whose p99 stays under 100 ms. The load generator runs in this process, so its own latency is
   part of the figure (as it would be for real clients, only more concentrated).

When `NATS_URL` is given, no other auth or catalog service may be subscribed there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, aclosing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx

from bench.client_loop import run_client
from bench.lean_ws import ConnectionClosed, LeanSocket
from parley_common.logging import setup_logging
from parley_devstack.servers import ManagedProcess, free_port, stop_all
from parley_devstack.testing import infra
from parley_runtime.llm import BuiltinProvider, ChatMessage, ChatRequest, Finish, TextDelta

DEFAULT_ITERATIONS = 300
DEFAULT_WARMUP = 30
DEFAULT_LEVELS = (25, 50, 100, 150, 200, 300, 400, 600, 800)
P99_LIMIT_MS = 100.0
GREETING = "Hello, I am the benchmark agent."
MESSAGE = "How long does a message take to come back through the whole platform?"


class Infra(Protocol):
    nats_url: str
    redis_url: str
    database_url: str


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------------------------ the platform


class Platform:
    """auth, catalog, one gateway and two runtime workers as processes, on the given infra."""

    def __init__(self, stack: Infra, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            NATS_URL=stack.nats_url,
            REDIS_URL=stack.redis_url,
            DATABASE_URL=stack.database_url,
            PARLEY_HTTP_HOST="127.0.0.1",
            PARLEY_LOG_LEVEL="WARNING",
            PARLEY_AUTH_TOKEN_SECRET=secrets.token_urlsafe(32),
            PARLEY_AUTH_MAIL_DIR=str(workdir / "mail"),
            PARLEY_AUTH_RATE_SIGNUP_IP="1000/minute",
            PARLEY_CATALOG_SECRET_KEY=secrets.token_urlsafe(32),
            PARLEY_RUNTIME_BUILTIN_PACE_MS="0",
            # The latency run sends turns back to back, faster than a person's default rate limit.
            PARLEY_GATEWAY_INPUT_RATE_PER_S="100000",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        self.processes: list[ManagedProcess] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> None:
        for module in ("parley_auth", "parley_catalog"):
            migrate = ManagedProcess(
                f"{module}.migrate",
                [sys.executable, "-m", f"{module}.migrate"],
                env=self.env,
                log_path=self.workdir / f"{module}.migrate.log",
            )
            migrate.start()
            assert migrate.proc is not None
            if migrate.proc.wait(120) != 0:
                raise RuntimeError(f"{module} migration failed, see {migrate.log_path}")
            migrate.close_log()
        for name, module in (
            ("auth", "parley_auth"),
            ("catalog", "parley_catalog"),
            ("gateway", "parley_session_gateway"),
            ("runtime-1", "parley_runtime"),
            ("runtime-2", "parley_runtime"),
        ):
            port = self.ports[name] = free_port()
            proc = ManagedProcess(
                name,
                [sys.executable, "-m", module],
                env={**self.env, "PARLEY_HTTP_PORT": str(port)},
                log_path=self.workdir / f"{name}.log",
            )
            proc.probe = lambda port=port: _ready(port)  # type: ignore[method-assign]
            proc.start()
            self.processes.append(proc)
        for proc in self.processes:
            proc.wait_ready(90)

    def stop(self) -> None:
        stop_all(self.processes, timeout=10)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


async def publish_agent(platform: Platform) -> tuple[str, str]:
    """A new user's API key, and a live agent of theirs: START (greeting) → DIALOG (LLM, forever)."""
    email = f"bench-{secrets.token_hex(6)}@example.com"
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{platform.url('auth')}/auth/signup",
            json={"email": email, "password": secrets.token_urlsafe(16), "name": "Bench"},
        )
        cookie = {"Cookie": f"kivox_session={resp.raise_for_status().cookies['kivox_session']}"}
        resp = await http.post(
            f"{platform.url('auth')}/auth/api-keys", json={"name": "bench"}, headers=cookie
        )
        key = str(resp.raise_for_status().json()["key"])
        blueprint = {
            "entries": [
                {
                    "name": "main",
                    "workflow": {
                        "nodes": [
                            {"id": "start", "type": "CONTROL.START", "data": {"greeting": GREETING}},
                            {"id": "chat", "type": "CONTROL.DIALOG", "data": {"exit_when": "false"}},
                            {"id": "end", "type": "CONTROL.END", "data": {}},
                        ],
                        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "end"}],
                    },
                }
            ]
        }
        catalog = platform.url("catalog")
        body = {"config": {"name": "Bench agent"}, "blueprint": blueprint}
        resp = await http.post(f"{catalog}/users/me/agents", json=body, headers=cookie)
        agent_id = str(resp.raise_for_status().json()["id"])
        resp = await http.patch(
            f"{catalog}/agents/{agent_id}/status", json={"status": "live"}, headers=cookie
        )
        resp.raise_for_status()
    return key, agent_id


# ------------------------------------------------------------------------------------ the client


async def next_text(ws: LeanSocket, timeout_s: float) -> str:
    """The socket's next text message: at once if it is here, else within `timeout_s`."""
    text = ws.queued()
    if text is None:
        async with asyncio.timeout(timeout_s):
            text = await ws.recv()
    return text


class Session:
    """One realtime session as the bench's clients hold it, over a `LeanSocket` (bench/lean_ws.py:
    the load generator shares the stack's cores, so its clients cost what a lean client costs)."""

    def __init__(self, ws: LeanSocket) -> None:
        self.ws = ws
        self.deltas = 0  # text_delta events read by `until` (a turn's messages through the stack)

    def hold(self) -> None:
        """Keep the session open and silent as a client does: what the server sends is read and
        dropped (its keepalive pings answered) as it arrives, with no task of its own."""
        self.ws.hold()

    @property
    def is_open(self) -> bool:
        return self.ws.is_open

    @classmethod
    async def open(cls, url: str, key: str, agent_id: str) -> Session:
        # As a browser's WebSocket: no proxy, no pings of its own (the server's are answered).
        async with asyncio.timeout(60):
            ws = await LeanSocket.connect(f"{url}?token={key}")
        try:
            ws.send(json.dumps({"type": "handshake", "agent_id": agent_id}))
            reply = json.loads(await next_text(ws, 60))
            if reply["type"] != "handshake_ok":
                raise RuntimeError(f"handshake refused: {reply}")
            session = cls(ws)
            await session.until("turn_complete")  # the greeting
        except BaseException:
            ws.abort()
            raise
        return session

    async def until(self, kind: str, first: str | None = None) -> float | None:
        """Read events up to `kind`; returns when `first` arrived (perf_counter), if asked."""
        seen: float | None = None
        while True:
            event = json.loads(await next_text(self.ws, 60))
            if event["type"] == "text_delta":
                self.deltas += 1
            if first is not None and seen is None and event["type"] == first:
                seen = time.perf_counter()
            if event["type"] == kind:
                return seen
            if event["type"] in ("error", "session_closed"):
                raise RuntimeError(f"unexpected event {event}")

    async def turn(self) -> tuple[float, float]:
        """(ms to the first text_delta, ms to turn_complete) of one user message."""
        started = time.perf_counter()
        self.ws.send(json.dumps({"type": "input_text", "text": MESSAGE}))
        first = await self.until("turn_complete", first="text_delta")
        done = time.perf_counter()
        assert first is not None
        return (first - started) * 1000, (done - started) * 1000

    async def close(self) -> None:
        self.ws.hold()  # what comes after `end` is not read
        with suppress(ConnectionClosed):
            self.ws.send(json.dumps({"type": "end"}))
        await self.ws.close()


async def engine_turn(provider: BuiltinProvider, request: ChatRequest) -> tuple[float, float]:
    """The same engine in-process: (ms to the first TextDelta, ms to Finish)."""
    started = time.perf_counter()
    first: float | None = None
    async with aclosing(provider.stream(request)) as events:
        async for event in events:
            if first is None and isinstance(event, TextDelta):
                first = time.perf_counter()
            if isinstance(event, Finish):
                break
    done = time.perf_counter()
    assert first is not None
    return (first - started) * 1000, (done - started) * 1000


# ------------------------------------------------------------------------------------ measurements


@dataclass(frozen=True)
class Latency:
    metric: str
    local: list[float]
    full: list[float]


@dataclass(frozen=True)
class Level:
    sessions: int
    samples: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


async def measure_latency(
    url: str, key: str, agent_id: str, *, iterations: int, warmup: int
) -> list[Latency]:
    provider = BuiltinProvider(pace_ms=0)
    session = await Session.open(url, key, agent_id)
    history = [ChatMessage(role="assistant", content=GREETING)]
    first_local: list[float] = []
    first_full: list[float] = []
    done_local: list[float] = []
    done_full: list[float] = []
    try:
        for i in range(warmup + iterations):
            # The request the runtime builds for this turn: the history with the new message.
            history.append(ChatMessage(role="user", content=MESSAGE))
            request = ChatRequest(messages=history[-100:])
            if i % 2:
                full = await session.turn()
                local = await engine_turn(provider, request)
            else:
                local = await engine_turn(provider, request)
                full = await session.turn()
            history.append(ChatMessage(role="assistant", content=f'You said: "{MESSAGE}".'))
            if i >= warmup:
                first_local.append(local[0])
                done_local.append(local[1])
                first_full.append(full[0])
                done_full.append(full[1])
    finally:
        await session.close()
    return [
        Latency("input_text → first text_delta", first_local, first_full),
        Latency("input_text → turn_complete", done_local, done_full),
    ]


async def measure_capacity(
    url: str, key: str, agent_id: str, *, levels: Sequence[int], turns: int, think_ms: float
) -> list[Level]:
    sessions: list[Session] = []
    results: list[Level] = []
    opening = asyncio.Semaphore(32)

    async def open_one() -> Session:
        async with opening:
            return await Session.open(url, key, agent_id)

    async def active(session: Session, samples: list[float]) -> None:
        await asyncio.sleep(random.uniform(0, think_ms / 1000))  # spread the first turns
        for _ in range(turns):
            samples.append((await session.turn())[1])
            await asyncio.sleep(think_ms / 1000 * random.uniform(0.8, 1.2))

    try:
        for level in levels:
            sessions += await asyncio.gather(*(open_one() for _ in range(level - len(sessions))))
            samples: list[float] = []
            await asyncio.gather(*(active(s, samples) for s in sessions))
            results.append(Level(level, samples))
            if results[-1].p99 >= P99_LIMIT_MS:
                break  # past the limit: higher levels only get worse
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return results


# ------------------------------------------------------------------------------------ output


def table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        print("  ".join(cells).rstrip(), file=out)


def latency_row(lat: Latency, unit: str = "") -> tuple[str, ...]:
    """A metric's p50 and p99 in-process, through the full path, and what the full path adds."""
    lp50, lp99 = percentile(lat.local, 50), percentile(lat.local, 99)
    fp50, fp99 = percentile(lat.full, 50), percentile(lat.full, 99)
    figures = (lp50, lp99, fp50, fp99, fp50 - lp50, fp99 - lp99)
    return (lat.metric, *(f"{v:.3f}{unit}" for v in figures))


def report(
    latency: Sequence[Latency],
    levels: Sequence[Level],
    *,
    iterations: int,
    warmup: int,
    think_ms: float,
    out: TextIO,
) -> None:
    print(
        "realtime latency: full path (WebSocket → gateway → NATS → runtime → NATS → gateway) vs in-process",
        file=out,
    )
    print(
        f"built-in engine, zero pace; {iterations} interleaved turns per path after {warmup} warm-up",
        file=out,
    )
    rows = []
    for lat in latency:
        ratio50 = percentile(lat.full, 50) / percentile(lat.local, 50)
        ratio99 = percentile(lat.full, 99) / percentile(lat.local, 99)
        rows.append((*latency_row(lat, " ms"), f"{ratio50:.2f}x", f"{ratio99:.2f}x"))
    header = ("metric", "in-process p50", "in-process p99", "full p50", "full p99")
    header += ("added p50", "added p99", "ratio p50", "ratio p99")
    table(header, rows, out)
    print("ratio = full path / in-process", file=out)
    print(file=out)
    print(
        f"realtime capacity: 1 gateway + 2 runtime workers, every session active "
        f"(one message, then {think_ms:.0f} ms ±20 % thinking, repeated)",
        file=out,
    )
    table(
        ("sessions", "turns", "p50 turn", "p99 turn"),
        [(str(lv.sessions), str(len(lv.samples)), f"{lv.p50:.3f} ms", f"{lv.p99:.3f} ms") for lv in levels],
        out,
    )
    held = [lv.sessions for lv in levels if lv.p99 < P99_LIMIT_MS]
    verdict = f"{max(held)} sessions" if held else "none of the levels"
    tried = "" if any(lv.p99 >= P99_LIMIT_MS for lv in levels) else " (the largest level tried)"
    print(f"held with p99 turn latency under {P99_LIMIT_MS:.0f} ms: {verdict}{tried}", file=out, flush=True)


# ------------------------------------------------------------------------------------ main


async def run(
    stack: Infra,
    *,
    iterations: int,
    warmup: int,
    levels: Sequence[int],
    turns: int,
    think_ms: float,
    out: TextIO | None = None,
) -> tuple[list[Latency], list[Level]]:
    with tempfile.TemporaryDirectory(prefix="parley-bench-realtime-") as tmp:
        platform = Platform(stack, Path(tmp))
        async with AsyncExitStack() as cleanup:
            cleanup.callback(platform.stop)
            await asyncio.to_thread(platform.start)
            key, agent_id = await publish_agent(platform)
            url = f"ws://127.0.0.1:{platform.ports['gateway']}/realtime"
            latency = await measure_latency(url, key, agent_id, iterations=iterations, warmup=warmup)
            capacity = await measure_capacity(
                url, key, agent_id, levels=levels, turns=turns, think_ms=think_ms
            )
    report(latency, capacity, iterations=iterations, warmup=warmup, think_ms=think_ms, out=out or sys.stdout)
    return latency, capacity


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="timed turns per path")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed turns per path first")
    parser.add_argument(
        "--levels",
        default=",".join(map(str, DEFAULT_LEVELS)),
        help="concurrent session counts to try, ascending (stops after the first over the p99 limit)",
    )
    parser.add_argument("--turns", type=int, default=3, help="messages per session at each level")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="pause between a session's messages")
    args: Any = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    if args.iterations < 1 or args.warmup < 0 or args.turns < 1 or not levels or min(levels) < 1:
        parser.error("--iterations, --turns and every level must be at least 1, --warmup at least 0")
    if levels != sorted(levels):
        parser.error("--levels must be ascending")
    setup_logging("bench", "WARNING", json_output=False)
    with infra() as stack:
        run_client(
            run(
                stack,
                iterations=args.iterations,
                warmup=args.warmup,
                levels=levels,
                turns=args.turns,
                think_ms=args.think_ms,
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
