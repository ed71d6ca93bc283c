"""What reading one subject of a stream in order costs: nats-py's ordered consumer against
`parley_common.ordered_reader.OrderedReader` (change 75), on an embedded nats-server.

    python -m bench.ordered_reader [--readers 300] [--messages 5] [--rounds 3]

Each round, for each path in turn: `--readers` subjects of one stream each hold a message; a
reader per subject is opened (all at once, as a burst of sessions' first inputs opens them) and
waits for that message; then `--messages` more are published to each subject and read; then the
readers are closed. Printed per reader: the CPU of this process and of nats-server for the opening
and its first message (nats-server's in its clock's 10 ms ticks, so coarse), this process's per
later message, and the tasks a reader keeps while quiet; then, from one more round of each path
under tracemalloc, the Python memory a quiet reader holds. The old reader was nats-py's
`js.subscribe(..., ordered_consumer=True)` with its flow-control poller cancelled (change 8); that
is the first path. See docs/performance.md,
"Reading a session's input: the ordered consumer made by hand".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence

import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig

from bench._embedded_nats import embedded_nats, median
from bench.client_loop import run_client
from parley_common.bus import BusEvents
from parley_common.ordered_reader import OrderedReader
from parley_common.reply_inbox import reply_inbox

STREAM = "BENCH"  # made again for each path and round: closed readers' consumers go with it
OnMsg = Callable[[Msg], Awaitable[None]]
Close = Callable[[], Awaitable[None]]
Open = Callable[[Client, str, OnMsg], Awaitable[Close]]


async def open_nats_py(
    nc: Client, subject: str, on_msg: Callable[[Msg], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    """The reader before change 75: nats-py's ordered consumer, its flow-control poller stopped."""

    async def deliver(msg: Msg) -> None:
        msg.metadata.sequence.stream  # the old reader's check of the stream sequence  # noqa: B018
        await on_msg(msg)

    sub = await nc.jetstream().subscribe(
        subject,
        stream=STREAM,
        cb=deliver,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=1),
    )
    poller = sub._sub._jsi._fctask  # type: ignore[attr-defined]
    if poller is not None:
        poller.cancel()
        sub._sub._jsi._fctask = None  # type: ignore[attr-defined]
    return sub.unsubscribe


async def open_ordered_reader(nc: Client, subject: str, on_msg: OnMsg) -> Close:
    reader = OrderedReader(nc, BusEvents(), stream=STREAM, subject=subject, on_msg=on_msg)
    await reader.open()
    return reader.close


PATHS: dict[str, Open] = {"nats-py ordered consumer": open_nats_py, "OrderedReader": open_ordered_reader}


class Figures:
    def __init__(self) -> None:
        self.open_us: list[float] = []
        self.server_us: list[float] = []
        self.message_us: list[float] = []
        self.tasks: list[float] = []
        self.kib: list[float] = []


async def one_round(
    nc: Client,
    server: psutil.Process,
    opener: Open,
    readers: int,
    messages: int,
    figures: Figures,
    tag: str,
    *,
    traced: bool = False,
) -> None:
    """One round of a path; `traced`: only what a quiet reader holds (tracemalloc slows the rest)."""
    subjects = [f"bench.{tag}.{i}" for i in range(readers)]
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"bench.{tag}.>"]))
    for subject in subjects:
        await js.publish(subject, b"x" * 200)
    counts = dict.fromkeys(subjects, 0)
    done = asyncio.Event()
    want = 1

    def on_msg_for(subject: str) -> OnMsg:
        async def on_msg(_: Msg) -> None:
            counts[subject] += 1
            if all(c >= want for c in counts.values()):
                done.set()

        return on_msg

    await reply_inbox(nc)  # the connection's (its first JetStream request of ours makes it), not a reader's
    tasks_before = len(asyncio.all_tasks())
    if traced:
        gc.collect()
        tracemalloc.start()
    held_before = tracemalloc.get_traced_memory()[0]
    cpu, srv = time.process_time(), sum(server.cpu_times()[:2])
    closers = await asyncio.gather(*(opener(nc, s, on_msg_for(s)) for s in subjects))
    await asyncio.wait_for(done.wait(), 60)
    open_us = (time.process_time() - cpu) / readers * 1e6
    server_us = (sum(server.cpu_times()[:2]) - srv) / readers * 1e6
    await asyncio.sleep(0.1)  # what the burst started settles
    if traced:
        gc.collect()
        figures.kib.append((tracemalloc.get_traced_memory()[0] - held_before) / readers / 1024)
        tracemalloc.stop()
        for close in closers:
            await close()
        await js.delete_stream(STREAM)
        return
    figures.open_us.append(open_us)
    figures.server_us.append(server_us)
    figures.tasks.append((len(asyncio.all_tasks()) - tasks_before) / readers)
    want, cpu = 1 + messages, time.process_time()
    done.clear()
    for _ in range(messages):
        for subject in subjects:
            await js.publish(subject, b"y" * 200)
    if not all(c >= want for c in counts.values()):
        await asyncio.wait_for(done.wait(), 60)
    # Publishing and reading: the publishes cost both paths the same.
    figures.message_us.append((time.process_time() - cpu) / (readers * messages) * 1e6)
    for close in closers:
        await close()
    await js.delete_stream(STREAM)


async def run(readers: int, messages: int, rounds: int) -> None:
    async with embedded_nats("parley-bench-reader-") as (nc, proc):
        figures = {name: Figures() for name in PATHS}
        for r in range(rounds):
            for n, (name, opener) in enumerate(PATHS.items()):
                await one_round(nc, proc, opener, readers, messages, figures[name], f"r{r}p{n}")
        for n, (name, opener) in enumerate(PATHS.items()):
            await one_round(nc, proc, opener, readers, messages, figures[name], f"m{n}", traced=True)
    print(
        f"{readers} readers opened at once, each reading its first message, then {messages} more;"
        f" median of {rounds} rounds"
    )
    print(
        f"{'path':<26} {'open µs':>8} {'server µs':>9} {'message µs':>10} {'tasks':>5} {'KiB':>5}"
        f" {'ratio':>5}"
    )
    base = median(figures[next(iter(PATHS))].open_us)
    for name, f in figures.items():
        opened = median(f.open_us)
        print(
            f"{name:<26} {opened:8.1f} {median(f.server_us):9.1f} {median(f.message_us):10.1f}"
            f" {median(f.tasks):5.1f} {median(f.kib):5.1f} {opened / base:5.2f}"
        )
    print(
        "open µs: this process's CPU per reader opened with its first message; server µs:"
        " nats-server's; message µs: this process's per later message read (the publishes"
        " included); tasks: kept per quiet reader; KiB: Python allocations it holds (tracemalloc, a round"
        " of its own); ratio: open µs against nats-py's"
    )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ordered_reader", description=__doc__)
    parser.add_argument("--readers", type=int, default=300)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    run_client(run(args.readers, args.messages, args.rounds))


if __name__ == "__main__":
    main(sys.argv[1:])
