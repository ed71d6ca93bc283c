"""Session gateway settings (env `PARLEY_GATEWAY_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from parley_common.settings import CommonSettings
from pydantic_settings import SettingsConfigDict


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", populate_by_name=True)

    service_name: str = "session_gateway"


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
