"""What waking up costs on this machine: the CPU an asyncio (uvloop) process spends per wake-up
when it sleeps between events, against a loop turn that never sleeps, in one process.

Every message of a turn wakes the process it reaches; a process busy with other sessions' work
takes it on a warm core, an idle one pays for waking up (the scheduler, and on a virtual machine
a halted vCPU and cold caches). Two kinds of wake-up, each after a pause of N ms:

- timer: `asyncio.sleep(N ms)` (the built-in engine's pace, a coalescer's window);
- socket: one byte from another process every N ms (a bus message, a client frame).

    python -m bench.wakeup [--pauses 0.2,2,20] [--count 200]

Prints CPU µs per wake-up for each pause and its ratio to a loop turn without sleeping
(`asyncio.sleep(0)`), the baseline of the same run. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Sequence

import uvloop

# The writer: one byte every `pause` seconds, `count` times, on the inherited socket.
_WRITER = """
import os, sys, time
pause, count, fd = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    time.sleep(pause)
    os.write(fd, b"x")
"""


async def hot_turn_us(count: int) -> float:
    """CPU per loop turn that never sleeps (the baseline)."""
    started = time.process_time()
    for _ in range(count):
        await asyncio.sleep(0)
    return (time.process_time() - started) / count * 1e6


async def timer_us(pause_s: float, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await asyncio.sleep(pause_s)
    return (time.process_time() - started) / count * 1e6


class _Counter(asyncio.Protocol):
    """Reads as the bus clients do (a transport kept registered with the loop), counting bytes."""

    def __init__(self, count: int) -> None:
        self.count, self.got, self.started = count, 0, 0.0
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.got:
            self.started = time.process_time()  # the writer is up: count from here
        self.got += len(data)
        if self.got >= self.count and not self.done.done():
            self.done.set_result((time.process_time() - self.started) / max(self.count - 1, 1) * 1e6)


async def socket_us(pause_s: float, count: int) -> float:
    ours, theirs = socket.socketpair()
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WRITER,
        str(pause_s),
        str(count),
        str(theirs.fileno()),
        pass_fds=(theirs.fileno(),),
    )
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_connection(lambda: _Counter(count), sock=ours)
    try:
        return await counter.done
    finally:
        await asyncio.wait_for(writer.wait(), 60)
        transport.close()
        theirs.close()


async def measure(pauses_ms: Sequence[float], count: int) -> list[tuple[float, float, float]]:
    rows = []
    for pause_ms in pauses_ms:
        rows.append(
            (pause_ms, await timer_us(pause_ms / 1000, count), await socket_us(pause_ms / 1000, count))
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__.splitlines()[0])
    parser.add_argument("--pauses", default="0.2,2,20", help="ms between wake-ups, comma-separated")
    parser.add_argument("--count", type=int, default=200, help="wake-ups per pause and kind")
    args = parser.parse_args(argv)
    pauses = [float(v) for v in args.pauses.split(",") if v.strip()]

    async def run() -> tuple[float, list[tuple[float, float, float]]]:
        hot = await hot_turn_us(20_000)
        return hot, await measure(pauses, args.count)

    hot, rows = uvloop.run(run())
    print(f"a loop turn without sleeping: {hot:.1f} µs CPU (the baseline)")
    print(f"{'pause':>9}  {'timer µs':>9}  {'ratio':>6}  {'socket µs':>9}  {'ratio':>6}")
    for pause_ms, timer, sock in rows:
        print(f"{pause_ms:>6.1f} ms  {timer:>9.1f}  {timer / hot:>5.0f}x  {sock:>9.1f}  {sock / hot:>5.0f}x")
    print("µs: CPU of this process per wake-up (user + system); ratio = that / the baseline")


if __name__ == "__main__":
    main(sys.argv[1:])
