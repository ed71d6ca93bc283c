"""How fast this machine runs Python right now, printed with `bench.perf`'s figures.

The machine the benchmarks run on is shared and changes: the same tree has read 3.98 and 5.03 ms
of CPU per turn five minutes apart. Since the fourth round docs/performance.md has told its runs
apart by one reference, a pure-Python loop of 5 million additions timed in CPU seconds: from 0.25 s
(the seventh round's machine) to 1.0 (the sixth's).
`bench.perf` times it before the stack starts and after it stops, so that each report says which
machine its figures come from; runs are comparable only where it reads about the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

ADDITIONS = 5_000_000
TRIES = 3
FASTEST_RECORDED_S = 0.25  # docs/performance.md, the seventh round


def reference_s(tries: int = TRIES) -> float:
    """CPU seconds of the 5-million-addition loop, the best of `tries` (the least disturbed). It runs
    as the rounds ran it, at the top level of a program of its own (`python -c`), where each name
    is a dictionary lookup: inside a function the same loop takes about a third of that."""
    program = compile(f"total = 0\nfor i in range({ADDITIONS}):\n    total += i\n", "<reference>", "exec")
    best = float("inf")
    for _ in range(tries):
        started = time.process_time()
        exec(program, {})  # the loop above, in globals of its own
        best = min(best, time.process_time() - started)
    return best


@dataclass
class MachineSpeed:
    """The reference before the stack started and after it stopped (CPU seconds)."""

    before_s: float
    after_s: float

    def line(self) -> str:
        times = max(self.before_s, self.after_s) / FASTEST_RECORDED_S
        return (
            f"a {ADDITIONS // 1_000_000}-million-addition Python loop took {self.before_s:.2f} s of CPU"
            f" before the run and {self.after_s:.2f} s after it (best of {TRIES} each; {FASTEST_RECORDED_S} s"
            f" on the fastest machine recorded, {times:.1f} times that here at the most)"
        )
