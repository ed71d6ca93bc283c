"""Smoke test of `bench.http_stack`: a tiny run end to end, checking the table and what does not
depend on the machine (the tasks and Python calls a request makes), never the timings."""

from __future__ import annotations

import re

from bench._smoke import run


def test_the_factorys_layers_make_no_task_and_fewer_calls_than_two_base_http_middlewares() -> None:
    out = run("http_stack", "--count", "20", "--rounds", "1", timeout=120)
    rows = {
        name: (ratio, int(calls), float(tasks))
        for name, ratio, calls, tasks in re.findall(
            r"^(the factory's layers|\+ 2 BaseHTTPMiddleware)\s+\d+\.\d\s+(\d+\.\d\d)\s+(\d+)\s+(\d+\.\d)$",
            out,
            re.M,
        )
    }
    assert set(rows) == {"the factory's layers", "+ 2 BaseHTTPMiddleware"}, out
    assert rows["the factory's layers"][0] == "1.00", out
    # Starlette's BaseHTTPMiddleware runs the rest of the stack in tasks of its own; none of the
    # factory's layers does (one that did would show here).
    assert rows["the factory's layers"][2] == 0.0 and rows["+ 2 BaseHTTPMiddleware"][2] >= 2.0, out
    assert rows["+ 2 BaseHTTPMiddleware"][1] > rows["the factory's layers"][1] * 1.5, out
