"""Smoke test of `bench.auth_verify`: a tiny run end to end, checking the table, never the timings."""

from __future__ import annotations

import os
import re
from typing import Any

from bench._smoke import run

MS = r"\d+\.\d{3} ms"
RATIO = r"\d+\.\d{2}x"
ROW = re.compile(rf"^(session|api_key|client_token)\s+{MS}\s+{MS}\s+{MS}\s+{MS}\s+{RATIO}\s+{RATIO}$", re.M)


def test_auth_verify_bench_prints_both_paths_and_their_ratio(infra: Any) -> None:
    # The bench's own `infra()` takes the session's Redis and PostgreSQL server from these (and makes
    # a fresh database). NATS stays its own: an auth app of this session (another module's) in the
    # same `auth` queue group on the session's NATS would take a share of the bench's requests.
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(REDIS_URL=infra.redis_url, DATABASE_URL=infra.database_url)
    out = run("auth_verify", "--iterations", "20", "--warmup", "2", env=env, timeout=180)
    header = next(line for line in out.splitlines() if line.startswith("credential"))
    columns = "credential  in-process p50  in-process p99  bus p50  bus p99  ratio p50  ratio p99"
    assert header.split() == columns.split(), out
    assert sorted(m.group(1) for m in ROW.finditer(out)) == ["api_key", "client_token", "session"], out
    assert "ratio = bus / in-process" in out
