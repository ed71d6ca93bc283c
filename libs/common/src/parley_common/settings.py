"""Configuration through environment variables (pydantic-settings).

Every setting has a safe default for `make run`. Infrastructure URLs use the conventional unprefixed
names (`NATS_URL`, `REDIS_URL`, `DATABASE_URL`); everything else is `PARLEY_*`.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service reads. Services subclass this to add their own."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "parley"
    environment: str = "development"
    nats_url: str = Field(
        default="nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "PARLEY_NATS_URL")
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "PARLEY_REDIS_URL")
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/parley",
        validation_alias=AliasChoices("DATABASE_URL", "PARLEY_DATABASE_URL"),
    )
    # Where `doc_url` in every error envelope points: the edge serves docs/errors.md at /errors,
    # with one anchor per error code.
    docs_url: str = "http://127.0.0.1:8080/errors"
    # Public origin of the platform (the edge). Used for links in mails and for cookie security.
    public_url: str = "http://127.0.0.1:8080"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Proxies whose X-Forwarded-For/-Proto are trusted (comma-separated IPs, or "*"). Client IPs
    # feed per-IP rate limits, so behind an edge this must name the edge (compose/k8s: "*",
    # since only the edge can reach the services there).
    forwarded_allow_ips: str = "127.0.0.1"
    # Connections the kernel holds for a service before its loop accepts them (`listen`'s backlog;
    # Linux caps it at net.core.somaxconn, 4096 since 5.4). uvicorn's 2048 overflowed in a storm
    # of 10,000 openings at 500/s: the gateway, busy admitting, fell up to ~2,900 accepts behind,
    # and each connection past the queue was refused by the edge after its dial timeout
    # (docs/performance.md, change 74).
    listen_backlog: int = Field(default=4096, ge=1)
    log_level: str = "INFO"
    log_json: bool = True
    # OpenTelemetry: traces are exported over OTLP/HTTP only when an endpoint is set.
    otlp_endpoint: str | None = None
    api_version: str = "0.1.0"
    min_client_version: str = "0.1.0"
    # Upper bound for any HTTP request body; larger bodies get 413 with the envelope.
    max_body_bytes: int = 1_048_576
    # Upper bound for the request's header section (names, values, separators); more gets 431 with
    # the envelope, also on a WebSocket upgrade. The edge lets up to 1 MB through to say so.
    max_header_bytes: int = 32_768
    bus_request_timeout_s: float = 2.0
    # While the NATS server is away the client tries to reconnect this often (a restarted broker
    # is used again within this long of its return).
    nats_reconnect_wait_s: float = Field(default=0.5, gt=0)
    # What must be stored (session input and output, transcripts, mail) is published with a
    # message id and retried under that id while the broker is away, so it is stored once; only
    # after this long does the publication fail (parley_common.jetstream.publish_durably).
    bus_publish_timeout_s: float = Field(default=30.0, gt=0)
    # At shutdown each step of a service's lifespan (one of its parts stopping, the broker's drain,
    # closing Redis and the database) gets this long; one that overruns is cancelled and logged
    # (`shutdown.step_overran`), and the steps after it still run (parley_common.kit.shutdown).
    # Above every wait a step has by design: the runtime's part lets its turns and Octavus
    # executions run for PARLEY_RUNTIME_DRAIN_TIMEOUT_S (25 s) and then hands sessions back,
    # nats-py's drain waits up to 30 s, and a durable publication up to `bus_publish_timeout_s`.
    shutdown_step_timeout_s: float = Field(default=60.0, gt=0)
    # Redis (parley_common.redis_client): one pool per process. A command waits up to
    # `redis_pool_timeout_s` for a free connection when all `redis_max_connections` are busy (then
    # fails with a clean 503, never an internal pool error); a dead connection (Redis restarted) is
    # dropped and the command retried on a fresh one up to `redis_retries` times.
    redis_max_connections: int = Field(default=100, ge=1)
    redis_pool_timeout_s: float = Field(default=5.0, gt=0)
    redis_connect_timeout_s: float = Field(default=1.0, gt=0)
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    redis_health_check_interval_s: int = Field(default=10, ge=0)
    redis_retries: int = Field(default=3, ge=0)
    # Replicas of every JetStream stream Parley creates: 1 for a single NATS server (make run,
    # compose, the dev overlay), 3 on a clustered NATS so a lost server loses no session.
    jetstream_replicas: int = Field(default=1, ge=1, le=5)
    # The cyclic garbage collector's thresholds (`gc.set_threshold`), set once a service has
    # started. Python's defaults (700, 10, 10) run a full collection, which walks every live
    # session, each time the long-lived objects grow by a quarter: while sessions open, ~30 % of
    # the gateway's CPU. These collect the young generations 14 times less often and consider a
    # full collection after 100 (not 10) collections of the middle one (docs/performance.md,
    # change 50). "[700, 10, 10]" restores Python's.
    gc_thresholds: tuple[int, int, int] = (10_000, 10, 100)

    @field_validator("gc_thresholds")
    @classmethod
    def _thresholds_positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 1:  # 0 would switch the collector off: cyclic garbage would pile up
            raise ValueError("every gc threshold must be at least 1")
        return value


@lru_cache
def common_settings() -> CommonSettings:
    return CommonSettings()
