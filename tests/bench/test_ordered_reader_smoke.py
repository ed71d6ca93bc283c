"""Smoke test of `bench.ordered_reader`: a tiny run end to end, checking the table and what does
not depend on the machine (the tasks a quiet reader keeps, less memory held by Parley's), never the
timings."""

from __future__ import annotations

import re

from bench._smoke import run

NUMBER = r"\s+([\d.]+)"
ROW = rf"^(nats-py ordered consumer|OrderedReader){NUMBER * 3}{NUMBER * 3}$"


def test_ordered_reader_prints_both_paths_and_only_nats_pys_keeps_tasks() -> None:
    out = run("ordered_reader", "--readers", "20", "--messages", "2", "--rounds", "1", timeout=180)
    rows = {
        name: (float(tasks), float(kib), float(ratio))
        for name, _, _, _, tasks, kib, ratio in re.findall(ROW, out, re.M)
    }
    assert set(rows) == {"nats-py ordered consumer", "OrderedReader"}, out
    tasks, kib, ratio = rows["nats-py ordered consumer"]
    assert (tasks, ratio) == (2.0, 1.0), out  # its queue's task and heartbeat check
    assert rows["OrderedReader"][0] == 0.0 and rows["OrderedReader"][1] < kib, out
