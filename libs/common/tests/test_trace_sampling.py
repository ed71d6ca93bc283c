"""The services take OpenTelemetry's own sampler settings (docs/operations.md, "What tracing costs,
and sampling"): `setup_telemetry` names no sampler of its own, so the SDK reads
`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; with neither, every trace is recorded."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from parley_common import telemetry
from parley_common.settings import CommonSettings


def _sampler(monkeypatch: pytest.MonkeyPatch) -> str:
    # A provider of its own for this test, not installed as the process's (other tests set theirs).
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)
    return telemetry.setup_telemetry(CommonSettings()).sampler.get_description()


def test_one_trace_in_ten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert _sampler(monkeypatch).startswith("ParentBased{root:TraceIdRatioBased{0.1}")


def test_every_trace_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    assert _sampler(monkeypatch).startswith("ParentBased{root:AlwaysOnSampler")
