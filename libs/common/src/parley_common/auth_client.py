"""What every non-auth service uses to verify credentials and check roles over the bus.

Verify results are cached (default 30 s, never past the credential's own expiry), so the common
case never crosses the bus; revocation is pushed: an event on `auth.events.revoked` clears the cache
at once, so a revoked credential stops working everywhere within the event's delivery time. What
could let a revoked credential through longer is closed off:

- a verification in flight when a revocation arrives is answered but not cached (the answer may
  predate the revocation);
- events published while this process was cut from NATS are lost to it (core NATS, fan-out), so
  the cache is cleared when the connection comes back;
- an event lost otherwise (auth died between its commit and the publish) is bounded by the TTL.

Concurrent verifications of one credential (a burst of sessions opened with one API key) share one
request. Whoever holds something open on a credential (the session gateway's sockets) listens to
the same events through `on_revoked`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from pydantic import ValidationError

from parley_common import auth_contract as auth
from parley_common import subjects
from parley_common.bus import bus_events, request
from parley_common.errors import Codes, Error, ParleyError, reply_error

log = structlog.get_logger(__name__)

OnRevoked = Callable[[auth.RevokedEvent], Awaitable[None]]


DEFAULT_CACHE_TTL_S = 30.0
MAX_CACHED = 100_000


class AuthClient:
    def __init__(
        self, broker: NatsBroker, *, cache_ttl_s: float = DEFAULT_CACHE_TTL_S, timeout_s: float = 2.0
    ) -> None:
        self.broker = broker
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        # credential → (valid until, fetched at, principal), monotonic clock
        self._cache: dict[str, tuple[float, float, auth.Principal]] = {}
        # Bumped by every clearing: an answer asked for before it is not cached.
        self._generation = 0
        self._inflight: dict[str, asyncio.Future[auth.Principal]] = {}
        self._listeners: list[OnRevoked] = []
        self.requests = 0  # verifications that crossed the bus (for tests and benchmarks)
        # No queue group: every replica of every service gets every revocation.
        broker.subscriber(subjects.AUTH_REVOKED)(self._on_revoked)
        bus_events(broker).on_reconnect(self._on_reconnect)

    def forget(self) -> None:
        """Drop every cached verification (and keep answers now in flight out of the cache)."""
        self._cache.clear()
        self._generation += 1

    async def _on_reconnect(self) -> None:
        # Revocations published while the connection was away never reached this process.
        self.forget()

    def on_revoked(self, listener: OnRevoked) -> None:
        """Call `listener` with each revocation event, after the cache has forgotten it."""
        self._listeners.append(listener)

    async def _on_revoked(self, body: Any) -> None:
        # Revocations are rare; dropping the whole cache is simpler than indexing it and never wrong.
        # It comes before parsing: a garbled revocation event still means "forget".
        self.forget()
        try:
            if isinstance(body, bytes | str):
                event = auth.RevokedEvent.model_validate_json(body)
            else:
                event = auth.RevokedEvent.model_validate(body)
        except ValidationError as exc:
            log.warning("auth.bad_revocation_event", error=str(exc.errors(include_input=False)[:1]))
            return
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("auth.revocation_listener_failed")

    async def verify(
        self, credential: str, kind: auth.CredentialKind | None = None, *, max_age_s: float | None = None
    ) -> auth.Principal:
        """The credential's principal, from the cache when it holds an answer (no older than
        `max_age_s`, when given: a backstop re-verification wants auth's word of the last moment)."""
        if not credential or len(credential) > auth.MAX_CREDENTIAL_LENGTH:
            # Nothing auth issued looks like this: refused here, without asking over the bus.
            raise ParleyError(Codes.UNAUTHENTICATED)
        key = credential if kind is None else f"{kind.value}:{credential}"
        hit = self._cache.get(key)
        if hit is not None:
            now = time.monotonic()
            expires, fetched, principal = hit
            if expires <= now:
                del self._cache[key]
            elif max_age_s is None or now - fetched <= max_age_s:
                return principal
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(
                self._ask(key, credential, kind, self._generation)
            )
            pending.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: one caller giving up (a socket closed) does not cancel the others' answer.
        return await asyncio.shield(pending)

    def _settled(self, key: str, done: asyncio.Future[auth.Principal]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every caller may have gone

    async def _ask(
        self, key: str, credential: str, kind: auth.CredentialKind | None, generation: int
    ) -> auth.Principal:
        self.requests += 1
        reply = await request(
            self.broker,
            subjects.AUTH_VERIFY,
            auth.VerifyRequest(credential=credential, kind=kind),
            auth.VerifyReply,
            timeout=self.timeout_s,
        )
        if not reply.ok or reply.principal is None:
            raise _refusal(reply.error)
        principal = reply.principal
        ttl = self.cache_ttl_s
        if principal.expires_at is not None:
            expires_at = principal.expires_at
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            ttl = min(ttl, (expires_at - datetime.now(UTC)).total_seconds())
        if ttl > 0 and generation == self._generation:
            while len(self._cache) >= MAX_CACHED:  # the oldest entries go first
                del self._cache[next(iter(self._cache))]
            now = time.monotonic()
            self._cache[key] = (now + ttl, now, principal)
        return principal

    async def authorize(
        self,
        principal: auth.Principal,
        min_role: auth.MemberRole,
        *,
        org_id: UUID | None = None,
        org_slug: str | None = None,
    ) -> auth.AuthorizeReply:
        reply = await request(
            self.broker,
            subjects.AUTH_AUTHORIZE,
            auth.AuthorizeRequest(principal=principal, org_id=org_id, org_slug=org_slug, min_role=min_role),
            auth.AuthorizeReply,
            timeout=self.timeout_s,
        )
        if not reply.ok:
            raise _refusal(reply.error)
        return reply

    async def mint_token(
        self, credential: str, agent_id: str, *, ttl_seconds: int, kind: Literal["chat", "voice"] = "voice"
    ) -> auth.MintTokenReply:
        """A short-lived client token for `agent_id`, minted by auth for the caller whose
        `credential` this is (`auth.token.mint`); auth's refusal is raised as its `ParleyError`."""
        reply = await request(
            self.broker,
            subjects.AUTH_TOKEN_MINT,
            auth.MintTokenRequest(
                credential=credential,
                agent_id=agent_id,
                ttl_seconds=ttl_seconds,
                token_type=kind,
            ),
            auth.MintTokenReply,
            timeout=self.timeout_s,
        )
        if not reply.ok or reply.token is None:
            raise _refusal(reply.error)
        return reply


def _refusal(error: Error | None) -> ParleyError:
    # Without params: callers pass auth's refusals on with auth's message alone.
    return reply_error(error, Codes.UNAUTHENTICATED, with_params=False)
