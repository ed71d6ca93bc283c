"""Pluggable verification of the `X-Turnstile-Token` header (Cloudflare Turnstile)."""

from __future__ import annotations

from typing import Protocol

import httpx
import structlog

from parley_common.errors import Codes, ParleyError

log = structlog.get_logger(__name__)


class TurnstileVerifier(Protocol):
    enabled: bool

    async def verify(self, token: str | None, remote_ip: str | None) -> None:
        """Return when the token is good; raise `ParleyError(auth.turnstile_failed)` otherwise."""


class DisabledTurnstile:
    """Used when no secret is configured (the `make run` default): every request passes."""

    enabled = False

    async def verify(self, token: str | None, remote_ip: str | None) -> None:
        return None


class CloudflareTurnstile:
    enabled = True

    def __init__(self, secret: str, verify_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.secret, self.verify_url = secret, verify_url
        self.client = client or httpx.AsyncClient(timeout=5.0)

    async def verify(self, token: str | None, remote_ip: str | None) -> None:
        if not token:
            raise ParleyError(Codes.TURNSTILE_FAILED, "The X-Turnstile-Token header is required.")
        form = {"secret": self.secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        try:
            resp = await self.client.post(self.verify_url, data=form)
            outcome = resp.json() if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            # Fail closed: an unverifiable challenge is a failed challenge.
            log.warning("turnstile.unreachable", error=str(exc))
            outcome = {}
        if outcome.get("success") is not True:
            raise ParleyError(
                Codes.TURNSTILE_FAILED, params={"error_codes": list(outcome.get("error-codes", []))[:5]}
            )


def make_verifier(secret: str | None, verify_url: str) -> TurnstileVerifier:
    return CloudflareTurnstile(secret, verify_url) if secret else DisabledTurnstile()
