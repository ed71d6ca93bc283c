"""Loaded by every Python process `bench.perf --profile DIR` starts (through PYTHONPATH).

SIGUSR2 starts cProfile on the main thread (where the service's event loop runs); the next
SIGUSR2 stops it and writes `DIR/<module>-<pid>.prof` (open with `python -m pstats` or snakeviz).
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

_DIR = os.environ.get("PARLEY_BENCH_PROFILE_DIR")
_profile: cProfile.Profile | None = None


def _toggle(_signum: int, _frame: FrameType | None) -> None:
    global _profile
    if _profile is None:
        _profile = cProfile.Profile(time.process_time)  # CPU time, not time spent descheduled
        _profile.enable()
        return
    _profile.disable()
    name = os.environ.get("PARLEY_HTTP_PORT", "x")
    script = Path(sys.argv[0])
    module = script.parent.name if script.name == "__main__.py" else script.stem
    assert _DIR is not None
    _profile.dump_stats(Path(_DIR) / f"{module}-{name}-{os.getpid()}.prof")
    _profile = None


if _DIR:
    signal.signal(signal.SIGUSR2, _toggle)
