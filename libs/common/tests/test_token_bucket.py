"""The in-process token bucket: a burst at once, then the refill rate."""

from __future__ import annotations

from parley_common.token_bucket import TokenBucket


def test_a_burst_then_the_refill_rate() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    bucket.stamp -= 1.2  # 1.2 s went by: one token back (and a fifth of one)
    assert bucket.take() and not bucket.take()
    bucket.stamp -= 100  # a long pause refills no more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
