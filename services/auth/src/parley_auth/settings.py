"""Auth service settings (env `PARLEY_AUTH_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from parley_common.auth_contract import SESSION_COOKIE
from parley_common.kit.db import DatabaseSettings


class AuthSettings(DatabaseSettings):
    service_name: str = "auth"
    # Signs scoped client tokens and peppers the hashes of session tokens and API keys.
    # `make run` generates one per install; production must set it.
    auth_token_secret: str = "dev-insecure-change-me"
    db_pool_size: int = Field(default=10, ge=1)
    # Cookie name is part of the client contract (HttpOnly cookie `kivox_session`).
    auth_cookie_name: str = SESSION_COOKIE
    auth_session_ttl_hours: int = Field(default=24 * 14, ge=1)
    auth_reset_token_ttl_minutes: int = Field(default=30, ge=1)
    # Cloudflare Turnstile: verification is on exactly when a secret is configured.
    auth_turnstile_secret: str | None = None
    auth_turnstile_verify_url: str = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
    # Outgoing mail: SMTP when a host is set, otherwise .eml files in the mail sink directory.
    auth_smtp_host: str | None = None
    auth_smtp_port: int = 587
    auth_smtp_username: str | None = None
    auth_smtp_password: str | None = None
    auth_smtp_starttls: bool = True
    auth_mail_from: str = "Parley <no-reply@parley.local>"
    auth_mail_dir: Path = Path(".parley/mail")
    # Mail goes out when its transaction commits; this is how often the outbox looks besides
    # (retries that came due, mail queued by a replica that stopped before sending it).
    auth_outbox_poll_s: float = Field(default=10.0, gt=0)
    # Rate limits ("N/period" strings of the `limits` library), per client IP and per account.
    auth_rate_login_ip: str = "30/minute"
    auth_rate_login_account: str = "10/minute"
    auth_rate_signup_ip: str = "10/minute"
    auth_rate_recover_ip: str = "10/minute"
    auth_rate_recover_account: str = "3/minute"
    auth_rate_key_create_ip: str = "30/minute"
    auth_rate_key_create_account: str = "20/minute"
    auth_rate_token_mint_account: str = "600/minute"
    # API keys: how often last_used_at is written at most (avoids a write per request).
    auth_key_touch_interval_s: int = 60


@lru_cache
def get_settings() -> AuthSettings:
    return AuthSettings()
