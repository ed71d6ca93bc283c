"""What a session's input costs the broker and the worker: an ordered consumer per session made at
its first input (`OrderedReader`, the runtime's reader before change 76) against the stream's own
republication heard over core NATS (`session_in_stored`, change 76), on an embedded nats-server.

    python -m bench.input_path [--sessions 300] [--inputs 10] [--rounds 2]

Each round, for each path in turn, on a stream with `SESSION_IN`'s republication: `--sessions`
subjects each get a subscription (the session's bell, or its republished input), then a first
input each, published with an ack as the gateway does and read by the session (the old path makes
its consumer then, as a session did at its first input), then `--inputs` - 1 more each. Printed
per session: nats-server's CPU for the first input (its consumer included) and per later input,
this process's CPU for the same (publishing included: the same for both paths), and the
nats-server memory (RSS) grown per session from before the first input to the sessions quiet
after their inputs, each path and round on a nats-server of its own. See
docs/performance.md, "Reading a session's input: heard as the stream republishes it".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import RePublish, StreamConfig

from bench._embedded_nats import embedded_nats, median
from bench.client_loop import run_client
from parley_common.bus import BusEvents
from parley_common.held_subscription import subscribe_held
from parley_common.ordered_reader import OrderedReader

STREAM = "BENCH_IN"  # made again for each path and round
OnInput = Callable[[], None]


class Session:
    """One session's reading of its input, by one of the two paths."""

    def __init__(self, nc: Client, tag: str, i: int, on_input: OnInput, consumer: bool) -> None:
        self.nc, self.on_input, self.consumer = nc, on_input, consumer
        self.subject, self.heard = f"bench.{tag}.{i}.in", f"bench.{tag}.{i}.in_stored"
        self.reader: OrderedReader | None = None
        self.bell: Subscription | None = None
        self.stopping: asyncio.Future[None] | None = None
        self.closers: list[Callable[[], Awaitable[None]]] = []

    async def open(self) -> None:
        if self.consumer:  # the bell: the input subject's core copy, a sign only
            self.bell = await subscribe_held(self.nc, self.subject, self._bell)
        else:
            self.closers.append((await subscribe_held(self.nc, self.heard, self._heard)).unsubscribe)

    async def _bell(self, _: Msg) -> None:
        if self.reader is None:  # the first input: the session's consumer, which reads it
            self.reader = OrderedReader(
                self.nc, BusEvents(), stream=STREAM, subject=self.subject, on_msg=self._read
            )
            self.closers.append(self.reader.close)
            await self.reader.open()
            assert self.bell is not None
            self.stopping = asyncio.ensure_future(self.bell.unsubscribe())  # as the runtime did

    async def _read(self, _: Msg) -> None:
        self.on_input()

    async def _heard(self, msg: Msg) -> None:
        headers = msg.headers or {}
        int(headers["Nats-Sequence"]), int(headers["Nats-Last-Sequence"])  # what the feed checks
        self.on_input()

    async def close(self) -> None:
        for close in self.closers:
            await close()


class Figures:
    def __init__(self) -> None:
        self.first_server_us: list[float] = []
        self.later_server_us: list[float] = []
        self.first_client_us: list[float] = []
        self.later_client_us: list[float] = []
        self.rss_kib: list[float] = []


async def one_round(
    nc: Client, server: psutil.Process, sessions: int, inputs: int, consumer: bool, f: Figures, tag: str
) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[f"bench.{tag}.*.in"],
            republish=RePublish(src=f"bench.{tag}.*.in", dest=f"bench.{tag}.{{{{wildcard(1)}}}}.in_stored"),
        )
    )
    read = 0
    enough = asyncio.Event()
    want = sessions

    def on_input() -> None:
        nonlocal read
        read += 1
        if read >= want:
            enough.set()

    all_ = [Session(nc, tag, i, on_input, consumer) for i in range(sessions)]
    for session in all_:
        await session.open()
    await nc.flush()
    await nc.flush()  # the SUBs are in before the first publish (parley_devstack.testing.subscribed)
    rss = server.memory_info().rss
    for n in range(inputs):
        if n < 2:  # the first input, then all later ones together (the server's clock is coarse)
            cpu, srv = time.process_time(), sum(server.cpu_times()[:2])
        await asyncio.gather(*(js.publish(s.subject, b'{"input": "hello there"}') for s in all_))
        await asyncio.wait_for(enough.wait(), 60)
        if n == 0:
            f.first_client_us.append((time.process_time() - cpu) / sessions * 1e6)
            f.first_server_us.append((sum(server.cpu_times()[:2]) - srv) / sessions * 1e6)
        want += sessions
        enough.clear()
    if inputs > 1:
        f.later_client_us.append((time.process_time() - cpu) / (sessions * (inputs - 1)) * 1e6)
        f.later_server_us.append((sum(server.cpu_times()[:2]) - srv) / (sessions * (inputs - 1)) * 1e6)
    await asyncio.sleep(0.5)  # quiet
    f.rss_kib.append((server.memory_info().rss - rss) / sessions / 1024)
    for session in all_:
        await session.close()
    await js.delete_stream(STREAM)


PATHS = {"consumer per session": True, "republished": False}


async def run(sessions: int, inputs: int, rounds: int) -> None:
    figures = {name: Figures() for name in PATHS}
    for r in range(rounds):
        for n, (name, consumer) in enumerate(PATHS.items()):
            # A server of its own for each: its resident memory is comparable from the same start.
            async with embedded_nats("parley-bench-input-") as (nc, proc):
                await one_round(nc, proc, sessions, inputs, consumer, figures[name], f"r{r}p{n}")
    print(f"{sessions} sessions, {inputs} inputs each (published with an ack); median of {rounds} rounds")
    print(
        f"{'path':<22} {'first: server µs':>16} {'client µs':>9} {'later: server µs':>16} {'client µs':>9}"
        f" {'server KiB':>10} {'ratio':>5}"
    )
    base = median(figures[next(iter(PATHS))].first_server_us)
    for name, f in figures.items():
        first = median(f.first_server_us)
        print(
            f"{name:<22} {first:16.1f} {median(f.first_client_us):9.1f}"
            f" {median(f.later_server_us):16.1f} {median(f.later_client_us):9.1f}"
            f" {median(f.rss_kib):10.1f} {first / base if base else float('nan'):5.2f}"
        )
    print(
        "first / later: per session, for its first input (the old path's consumer made then) and per"
        " later one; server: nats-server's CPU (its clock's 10 ms ticks, so coarse); client: this"
        " process's, the publishes included; server KiB: nats-server's resident memory grown per"
        " session while they are quiet; ratio: first-input server µs against the consumer's"
    )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.input_path", description=__doc__)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    run_client(run(args.sessions, args.inputs, args.rounds))


if __name__ == "__main__":
    main(sys.argv[1:])
