"""For tests that run an auth app in-process: auth's own, and those of services that need a real
auth beside them (the catalog's)."""

from __future__ import annotations

from parley_auth.settings import AuthSettings

NO_LIMIT = "1000000/minute"


def no_rate_limits() -> dict[str, str]:
    """Every `auth_rate_*` setting, so high that no test meets it; rate-limit tests lower one."""
    return {name: NO_LIMIT for name in AuthSettings.model_fields if name.startswith("auth_rate_")}
