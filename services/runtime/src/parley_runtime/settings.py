"""Runtime worker settings (env `PARLEY_RUNTIME_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from parley_common.settings import CommonSettings
from pydantic_settings import SettingsConfigDict


class RuntimeSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "runtime"


@lru_cache
def get_settings() -> RuntimeSettings:
    return RuntimeSettings()
