"""Smoke tests of `bench.socket_dispatch`, `bench.log_line` and `bench.span_cost`: tiny runs end
to end, checking the tables and what does not depend on the machine (how deep a socket's route
runs), never the timings."""

from __future__ import annotations

import re

from bench._smoke import run


def test_socket_dispatch_prints_the_three_paths_and_each_lane_runs_the_route_shallower() -> None:
    out = run("socket_dispatch", "--count", "50", "--rounds", "1", timeout=120)
    rows = dict(
        re.findall(r"^(through the layers|SocketLane|LanedApp)\s+\d+\.\d\s+\d\.\d\d\s+(\d+)$", out, re.M)
    )
    assert set(rows) == {"through the layers", "SocketLane", "LanedApp"}, out
    assert int(rows["through the layers"]) - int(rows["SocketLane"]) >= 10, out
    assert int(rows["SocketLane"]) - int(rows["LanedApp"]) >= 5, out


def test_log_line_prints_both_paths_against_the_one_through_logging() -> None:
    out = run("log_line", "--count", "200", "--rounds", "1", timeout=120)
    rows = dict(re.findall(r"^(through logging|written directly)\s+\d+\.\d\s+(\d\.\d\d)$", out, re.M))
    assert set(rows) == {"through logging", "written directly"}, out
    assert rows["through logging"] == "1.00", out
    sockets = dict(re.findall(r"^(the filter|PerConnectionLogger)\s+\d+\.\d\d\s+(\d\.\d\d)$", out, re.M))
    assert set(sockets) == {"the filter", "PerConnectionLogger"} and sockets["the filter"] == "1.00", out


def test_span_cost_prints_the_three_ways_against_the_sdks() -> None:
    out = run("span_cost", "--count", "200", "--rounds", "1", timeout=120)
    rows = dict(
        re.findall(r"^(start_as_current_span|current_span|the span alone)\s+\d+\.\d\s+(\d\.\d\d)$", out, re.M)
    )
    assert set(rows) == {"start_as_current_span", "current_span", "the span alone"}, out
    assert rows["start_as_current_span"] == "1.00", out
