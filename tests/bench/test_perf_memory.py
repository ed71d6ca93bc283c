"""`bench.perf`'s memory figure counts a page shared by several processes once in all, not once
in each (PostgreSQL's backends share its buffers): proportional set size, not RSS."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.perf_stack import proportional_bytes

# 64 MiB written, then a fork: parent and child map the same pages until either writes them.
SHARED = """
import os, sys, time
block = bytearray(64 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("forked", flush=True)
time.sleep(60)
"""


def test_pages_two_processes_share_count_once_across_both() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SHARED], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "forked"
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 10
        while not parent.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [parent, *parent.children()]
        assert len(tree) == 2
        rss = sum(p.memory_info().rss for p in tree)
        pss = sum(proportional_bytes(p) for p in tree)
        assert rss > 2 * 60 * 2**20  # each counts the 64 MiB block whole
        assert pss < rss - 50 * 2**20  # the block counts once across both
    finally:
        for p in psutil.Process(proc.pid).children():
            p.kill()
        proc.kill()
        proc.wait()
