"""`auth.verify` latency: NATS request/reply against an in-process call of the same function.

`python -m bench.auth_verify [--iterations N] [--warmup N]`

Starts its own NATS, Redis and PostgreSQL with `parley_devstack.testing.infra()` (which uses
`NATS_URL` / `REDIS_URL` / `DATABASE_URL` instead when they are set, always with a fresh database),
runs the auth service in this process (its app lifespan: the `auth.verify` subscriber, the DB pool),
and makes a user with a session, an API key and a client token through its HTTP API. Then, for each
of the three credentials, it times N iterations of both paths:

- bus: `parley_common.bus.request(auth.verify)` from a second NATS connection, as any other service
  sends it, answered by the auth service's subscriber (uncached: no `AuthClient` in between);
- in-process: `verify_credential(db_session, settings, credential)` with a session from the
  service's own pool, which is exactly what the bus handler runs.

The two alternate within each iteration (and which goes first alternates too), so machine noise and
drift hit both alike. It prints p50/p99 of each and the ratio bus/in-process.

When `NATS_URL` is given, no other auth service may be subscribed there: the `auth` queue group would
share the bench's requests with it (the bench stops with an error when it notices).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx
from fastapi import FastAPI

from parley_auth.app import build_app
from parley_auth.migrate import upgrade
from parley_auth.settings import AuthSettings
from parley_auth.verification import verify_credential
from parley_common import subjects
from parley_common.auth_contract import Principal, VerifyReply, VerifyRequest
from parley_common.bus import make_broker, request
from parley_common.logging import setup_logging
from parley_devstack.testing import infra

DEFAULT_ITERATIONS = 2000
DEFAULT_WARMUP = 200


class Stack(Protocol):
    nats_url: str
    redis_url: str
    database_url: str


@dataclass(frozen=True)
class Stats:
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        return cls(p50_ms=percentile(samples_ms, 50), p99_ms=percentile(samples_ms, 99))


@dataclass(frozen=True)
class Result:
    credential: str
    in_process: Stats
    bus: Stats

    @property
    def ratio_p50(self) -> float:
        return self.bus.p50_ms / self.in_process.p50_ms

    @property
    def ratio_p99(self) -> float:
        return self.bus.p99_ms / self.in_process.p99_ms


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def make_credentials(app: FastAPI) -> dict[str, str]:
    """A new user's session token, an API key and a client token, made through the HTTP API."""
    cookie = app.state.ctx.settings.auth_cookie_name
    email = f"bench-{secrets.token_hex(6)}@example.com"
    signup = {"email": email, "password": secrets.token_urlsafe(16), "name": "Bench"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://auth.bench") as http:
        resp = (await http.post("/auth/signup", json=signup)).raise_for_status()
        session = resp.cookies[cookie]
        http.cookies.clear()
        as_user = {"Cookie": f"{cookie}={session}"}
        resp = await http.post("/auth/api-keys", json={"name": "bench"}, headers=as_user)
        api_key = resp.raise_for_status().json()["key"]
        as_key = {"Authorization": f"Bearer {api_key}"}
        resp = await http.post("/chat/tokens", json={"workflow_id": "bench-agent"}, headers=as_key)
        client_token = resp.raise_for_status().json()["token"]
    return {"session": session, "api_key": api_key, "client_token": client_token}


async def measure(
    via_bus: Callable[[], Awaitable[Principal]],
    in_process: Callable[[], Awaitable[Principal]],
    *,
    iterations: int,
    warmup: int,
) -> tuple[list[float], list[float]]:
    """Milliseconds per call of each path (bus, in-process), interleaved."""
    bus_ms: list[float] = []
    local_ms: list[float] = []
    for i in range(warmup + iterations):
        order = ((via_bus, bus_ms), (in_process, local_ms))
        for call, samples in order if i % 2 else reversed(order):
            started = time.perf_counter()
            await call()
            elapsed = (time.perf_counter() - started) * 1000
            if i >= warmup:
                samples.append(elapsed)
    return bus_ms, local_ms


async def run(stack: Stack, *, iterations: int, warmup: int, out: TextIO | None = None) -> list[Result]:
    await asyncio.to_thread(upgrade, stack.database_url)
    with tempfile.TemporaryDirectory(prefix="parley-bench-mail-") as mail_dir:
        settings = AuthSettings(
            database_url=stack.database_url,
            nats_url=stack.nats_url,
            redis_url=stack.redis_url,
            auth_token_secret=secrets.token_urlsafe(32),
            auth_mail_dir=Path(mail_dir),
        )
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            credentials = await make_credentials(app)
            sessions = app.state.ctx.db.sessions
            client = make_broker(settings, name="bench-client")
            await client.start()
            try:
                results = []
                for kind, credential in credentials.items():
                    verify_request = VerifyRequest(credential=credential)

                    async def via_bus(req: VerifyRequest = verify_request) -> Principal:
                        reply = await request(client, subjects.AUTH_VERIFY, req, VerifyReply)
                        if not reply.ok or reply.principal is None:
                            raise RuntimeError(f"auth.verify over the bus failed: {reply.error}")
                        return reply.principal

                    async def in_process(credential: str = credential) -> Principal:
                        async with sessions() as db:
                            return await verify_credential(db, settings, credential)

                    if (await via_bus()).credential_id != (await in_process()).credential_id:
                        raise RuntimeError(f"bus and in-process verify disagree on the {kind} credential")
                    bus_ms, local_ms = await measure(
                        via_bus, in_process, iterations=iterations, warmup=warmup
                    )
                    results.append(Result(kind, in_process=Stats.of(local_ms), bus=Stats.of(bus_ms)))
            finally:
                await client.stop()
    print_table(results, iterations=iterations, warmup=warmup, out=out or sys.stdout)
    return results


def print_table(results: Sequence[Result], *, iterations: int, warmup: int, out: TextIO) -> None:
    header = ("credential", "in-process p50", "in-process p99", "bus p50", "bus p99")
    header += ("ratio p50", "ratio p99")
    rows = [
        (
            r.credential,
            f"{r.in_process.p50_ms:.3f} ms",
            f"{r.in_process.p99_ms:.3f} ms",
            f"{r.bus.p50_ms:.3f} ms",
            f"{r.bus.p99_ms:.3f} ms",
            f"{r.ratio_p50:.2f}x",
            f"{r.ratio_p99:.2f}x",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        padded[0] = cells[0].ljust(widths[0])
        return "  ".join(padded)

    print("auth.verify latency: NATS request/reply (bus) vs in-process verify_credential", file=out)
    print(f"{iterations} interleaved iterations per path and credential, after {warmup} warm-up", file=out)
    print(line(header), file=out)
    for row in rows:
        print(line(row), file=out)
    print("ratio = bus / in-process", file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_verify", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="timed calls per path")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed calls per path first")
    args: Any = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1 and --warmup at least 0")
    # Service logs go to stderr and only from WARNING up, so stdout is just the table.
    setup_logging("bench", "WARNING", json_output=False)
    with infra() as stack:
        asyncio.run(run(stack, iterations=args.iterations, warmup=args.warmup))


if __name__ == "__main__":
    main(sys.argv[1:])
