"""How the smoke tests run a benchmark (tests/bench, tests/e2e/test_realtime_bench.py): as a user
does, `python -m bench.<name>` from the repository's root, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """What `python -m bench.<name> args` printed; a failed run fails with what it said on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
