"""The in-process token bucket: a burst at once, then the refill rate."""

from __future__ import annotations

import time

from parley_common.token_bucket import TokenBucket


def test_a_burst_then_the_refill_rate() -> None:
    bucket = TokenBucket(rate=20.0, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    time.sleep(0.06)  # one token (and a bit) back, never more than the burst
    assert bucket.take() and not bucket.take()
    time.sleep(0.3)
    assert sum(bucket.take() for _ in range(10)) == 3
