"""Catalog service settings (env `PARLEY_CATALOG_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from parley_common.settings import CommonSettings
from pydantic_settings import SettingsConfigDict


class CatalogSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "catalog"
    # Encrypts agent secrets at rest. `make run` generates one per install; production must set it.
    catalog_secret_key: str = "dev-insecure-change-me"
    db_pool_size: int = 5


@lru_cache
def get_settings() -> CatalogSettings:
    return CatalogSettings()
