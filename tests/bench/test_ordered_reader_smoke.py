"""Smoke test of `bench.ordered_reader`: a tiny run end to end, checking the table and what does
not depend on the machine (the tasks a quiet reader keeps), never the timings."""

from __future__ import annotations

import re

from bench._smoke import run


def test_ordered_reader_prints_both_paths_and_only_nats_pys_keeps_tasks() -> None:
    out = run("ordered_reader", "--readers", "20", "--messages", "2", "--rounds", "1", timeout=180)
    rows = {
        name: (float(tasks), float(ratio))
        for name, tasks, ratio in re.findall(
            r"^(nats-py ordered consumer|OrderedReader)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$",
            out,
            re.M,
        )
    }
    assert set(rows) == {"nats-py ordered consumer", "OrderedReader"}, out
    assert rows["nats-py ordered consumer"] == (2.0, 1.0), out  # its queue's task and heartbeat check
    assert rows["OrderedReader"][0] == 0.0, out
