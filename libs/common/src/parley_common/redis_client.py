"""The one way a Parley process talks to Redis: a bounded, blocking pool with retries.

Every service builds its client here (the auth rate limiter, the gateway, the runtime's session and
Octavus stores), so all of them behave alike when Redis is busy or restarts:

- **Bounded, blocking pool.** At most `redis_max_connections` connections per process; a command
  that finds them all busy waits up to `redis_pool_timeout_s` for one (a burst queues) and then
  fails with `redis.ConnectionError`, which the services answer as `service.unavailable` (503),
  never as an internal pool error.
- **Dead connections are dropped at once.** A command that fails with a connection error or a
  timeout (after a Redis restart every pooled connection is dead) closes that connection and is
  retried on a fresh one, `redis_retries` times with a short jittered backoff; an idle connection
  is also checked (PING) before use after `redis_health_check_interval_s`. While Redis is down a
  command therefore fails within about a second, and works again as soon as Redis is back.
- **Short connect and socket timeouts**, so neither a readiness probe nor a request hangs on a
  Redis that does not answer.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley_common.settings import CommonSettings


def make_pool(settings: CommonSettings) -> BlockingConnectionPool:
    """The process's connection pool (also what a library such as `limits` is given)."""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5),
            settings.redis_retries,
            supported_errors=(RedisConnectionError, RedisTimeoutError),
        ),
    )
    return pool


def make_redis(settings: CommonSettings) -> Redis:
    """A client on a pool of its own (one per process: build it once and share it)."""
    return Redis(connection_pool=make_pool(settings))
