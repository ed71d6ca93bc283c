"""Rate limits kept in Redis (the `limits` library): per client IP, per account, per caller.

The storage uses the process's Redis pool (`parley_common.redis_client`): while Redis is down a
limited route answers 503 `service.unavailable` (the outage handler of parley_common.http) rather
than letting the request through unchecked or failing with a 500.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import ConnectionPool

from parley_common import metrics
from parley_common.errors import Codes, ParleyError


class RateLimiter:
    """Sliding-window limits (`"10/minute"`) under `key_prefix`, one per service."""

    def __init__(self, redis_url: str, pool: ConnectionPool, *, key_prefix: str) -> None:
        url = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
        self.storage = RedisStorage(
            url,
            implementation="redispy",
            key_prefix=key_prefix,
            connection_pool=pool,  # type: ignore[arg-type]  # documented option, narrow stub
        )
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(self, action: str, limit: str, identifier: str) -> None:
        """Count one attempt; once the limit is exceeded raise 429 with `Retry-After`."""
        item = parse(limit)
        if await self.limiter.hit(item, action, identifier.lower()):
            return
        metrics.RATE_LIMIT_REJECTIONS.labels(action).inc()
        stats = await self.limiter.get_window_stats(item, action, identifier.lower())
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ParleyError(
            Codes.RATE_LIMITED,
            params={"retry_after": retry_after, "action": action},
            headers={"Retry-After": str(retry_after)},
        )

    async def check_ready(self) -> None:
        if not await self.storage.check():
            raise ConnectionError("redis unreachable")
