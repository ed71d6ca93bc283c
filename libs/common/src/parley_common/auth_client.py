"""What every non-auth service uses to verify credentials and check roles over the bus.

Verify results are cached briefly (default 1 s) to keep hot paths cheap; a revocation event on
`auth.events.revoked` clears the cache at once, so a revoked credential stops working everywhere
within the event's delivery time, and in the worst case (a lost event) within the TTL. Whoever
holds something open on a credential (the session gateway's sockets) listens to the same events
through `on_revoked`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from pydantic import ValidationError

from parley_common import subjects
from parley_common.auth_contract import (
    MAX_CREDENTIAL_LENGTH,
    AuthorizeReply,
    AuthorizeRequest,
    CredentialKind,
    MemberRole,
    MintTokenReply,
    MintTokenRequest,
    Principal,
    RevokedEvent,
    VerifyReply,
    VerifyRequest,
)
from parley_common.bus import request
from parley_common.errors import REGISTRY, Codes, ParleyError

log = structlog.get_logger(__name__)

OnRevoked = Callable[[RevokedEvent], Awaitable[None]]


class AuthClient:
    def __init__(self, broker: NatsBroker, *, cache_ttl_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.broker = broker
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._listeners: list[OnRevoked] = []
        # No queue group: every replica of every service gets every revocation.
        broker.subscriber(subjects.AUTH_REVOKED)(self._on_revoked)

    def on_revoked(self, listener: OnRevoked) -> None:
        """Call `listener` with each revocation event, after the cache has forgotten it."""
        self._listeners.append(listener)

    async def _on_revoked(self, body: Any) -> None:
        # Revocations are rare; dropping the whole cache is simpler than indexing it and never wrong.
        # It comes before parsing: a garbled revocation event still means "forget".
        self._cache.clear()
        try:
            if isinstance(body, bytes | str):
                event = RevokedEvent.model_validate_json(body)
            else:
                event = RevokedEvent.model_validate(body)
        except ValidationError as exc:
            log.warning("auth.bad_revocation_event", error=str(exc.errors(include_input=False)[:1]))
            return
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("auth.revocation_listener_failed")

    async def verify(self, credential: str, kind: CredentialKind | None = None) -> Principal:
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            # Nothing auth issued looks like this: refused here, without asking over the bus.
            raise ParleyError(Codes.UNAUTHENTICATED)
        now = time.monotonic()
        hit = self._cache.get(credential)
        if hit is not None and hit[0] > now:
            return hit[1]
        reply = await request(
            self.broker,
            subjects.AUTH_VERIFY,
            VerifyRequest(credential=credential, kind=kind),
            VerifyReply,
            timeout=self.timeout_s,
        )
        if not reply.ok or reply.principal is None:
            raise _as_error(
                reply.error.code if reply.error else None, reply.error.message if reply.error else None
            )
        if self.cache_ttl_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[credential] = (now + self.cache_ttl_s, reply.principal)
        return reply.principal

    async def authorize(
        self,
        principal: Principal,
        min_role: MemberRole,
        *,
        org_id: UUID | None = None,
        org_slug: str | None = None,
    ) -> AuthorizeReply:
        reply = await request(
            self.broker,
            subjects.AUTH_AUTHORIZE,
            AuthorizeRequest(principal=principal, org_id=org_id, org_slug=org_slug, min_role=min_role),
            AuthorizeReply,
            timeout=self.timeout_s,
        )
        if not reply.ok:
            raise _as_error(
                reply.error.code if reply.error else None, reply.error.message if reply.error else None
            )
        return reply

    async def mint_token(
        self, credential: str, agent_id: str, *, ttl_seconds: int, kind: Literal["chat", "voice"] = "voice"
    ) -> MintTokenReply:
        """A short-lived client token for `agent_id`, minted by auth for the caller whose
        `credential` this is (`auth.token.mint`); auth's refusal is raised as its `ParleyError`."""
        reply = await request(
            self.broker,
            subjects.AUTH_TOKEN_MINT,
            MintTokenRequest(
                credential=credential,
                agent_id=agent_id,
                ttl_seconds=ttl_seconds,
                token_type=kind,
            ),
            MintTokenReply,
            timeout=self.timeout_s,
        )
        if not reply.ok or reply.token is None:
            raise _as_error(
                reply.error.code if reply.error else None, reply.error.message if reply.error else None
            )
        return reply


def _as_error(code: str | None, message: str | None) -> ParleyError:
    entry = REGISTRY.get(code or "", Codes.UNAUTHENTICATED)
    return ParleyError(entry, message)
