"""Smoke test of `bench.voice_engines`: a tiny run end to end, checking the report, never the timings."""

from __future__ import annotations

import re

from bench._smoke import run


def test_voice_engines_bench_reports_every_figure() -> None:
    out = run("voice_engines", "--utterances", "1", "--sessions", "1", "--seconds", "4")
    assert re.search(r"per utterance\s+p50\s+\d+\.\d ms\s+p99", out), out
    assert re.search(r"first audio\s+p50\s+\d+\.\d ms", out), out
    assert re.search(r"VAD Silero v6: \d+ µs per 20 ms frame", out), out
    assert re.search(r"^\s+1\s+\d+\s+", out, re.M), out  # the one-session level ran
    assert re.search(r"one worker sustains \d+ concurrent", out), out
