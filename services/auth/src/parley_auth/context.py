"""Process-wide dependencies of the auth service, built once in the app lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog
from faststream.nats import NatsBroker

from parley_auth.db import Database
from parley_auth.security.turnstile import TurnstileVerifier
from parley_auth.settings import AuthSettings
from parley_common import subjects
from parley_common.auth_contract import CredentialKind, RevokedEvent
from parley_common.ratelimit import RateLimiter

log = structlog.get_logger(__name__)


@dataclass
class AuthContext:
    settings: AuthSettings
    db: Database
    limiter: RateLimiter
    turnstile: TurnstileVerifier
    broker: NatsBroker

    async def publish_revoked(
        self,
        *,
        kind: CredentialKind | None = None,
        credential_ids: list[UUID] | None = None,
        user_id: UUID | None = None,
        user_kinds: list[CredentialKind] | None = None,
    ) -> None:
        """Tell every service that caches verify results to forget these credentials now, and the
        session gateways to close the connections opened with them (`RevokedEvent`).

        Best effort: verify always reads the database, so a lost event only delays the moment a
        cache forgets (bounded by the cache TTL) and an open connection closes (bounded by the
        gateway's re-verification interval); it never resurrects a credential.
        """
        event = RevokedEvent(
            kind=kind,
            credential_ids=credential_ids or [],
            user_id=user_id,
            user_kinds=user_kinds or [],
            at=datetime.now(UTC),
        )
        try:
            await self.broker.publish(event, subjects.AUTH_REVOKED)
        except Exception as exc:
            log.warning("auth.revoked_publish_failed", error=str(exc))
