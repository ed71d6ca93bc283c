"""Catalog service settings (env `PARLEY_CATALOG_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from parley_common.auth_contract import SESSION_COOKIE
from parley_common.kit.db import DatabaseSettings
from parley_common.speech_contract import SpeechProviderKeys

DEV_SECRET_KEY = "dev-insecure-change-me"


class CatalogSettings(DatabaseSettings, SpeechProviderKeys):
    """`SpeechProviderKeys`: lint only asks whether a platform key is set for a voice engine."""

    service_name: str = "catalog"
    # Encrypts agent secrets at rest. Comma-separated for rotation: the first key encrypts, every key
    # decrypts (see docs/catalog.md). `make run` generates one per install; production must set it.
    catalog_secret_key: str = DEV_SECRET_KEY
    # The browser session cookie auth sets (part of the client contract).
    catalog_cookie_name: str = SESSION_COOKIE
    # How long a verified credential is reused without asking auth again (revocations clear it).
    # Verified credentials are reused this long (never past their expiry); revocations pushed by
    # auth clear them at once (parley_common.auth_client).
    catalog_auth_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Webhook tools. Requests to loopback, link-local, private, multicast and reserved addresses are
    # refused unless this is set (a local test server, or tools inside a trusted private network).
    catalog_tools_allow_private: bool = False
    catalog_tools_max_response_bytes: int = Field(default=1_048_576, ge=1)
    # Extra attempts for idempotent methods (GET, PUT, DELETE) after a timeout, a connection error or
    # a 502/503/504 answer. POST and PATCH are never retried.
    catalog_tools_max_retries: int = Field(default=2, ge=0, le=5)
    catalog_tools_retry_backoff_s: float = Field(default=0.2, ge=0)
    # Conversation history: the durable JetStream consumer shared by every catalog replica.
    catalog_conversations_durable: str = "catalog-conversations"
    # Retention of the CONVERSATIONS stream when the catalog creates it (it never alters an existing one).
    catalog_conversations_max_age_days: float = Field(default=7, gt=0)
    catalog_conversations_batch: int = Field(default=64, ge=1, le=1000)
    # Under load, the shortest time between two batches, so events arriving one by one are stored a
    # batch per transaction (history is up to this much later); an event that comes after a quiet
    # spell at least this long is stored as soon as it comes.
    catalog_conversations_batch_wait_s: float = Field(default=0.2, ge=0, le=5)
    # How long a message failing for a transient reason (database down) waits before redelivery.
    catalog_conversations_retry_delay_s: float = Field(default=2.0, ge=0)


@lru_cache
def get_settings() -> CatalogSettings:
    return CatalogSettings()
