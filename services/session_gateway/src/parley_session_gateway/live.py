"""The gateway's open connections and the credential each one runs on, so revocation reaches them.

auth publishes `auth.events.revoked` (fan-out: every gateway replica gets every event) once it
has revoked credentials: a logout, an API key (and with it every client token the key minted), a
logout everywhere, a password reset, an account deletion. `AuthClient` hands each event to
`LiveConnections.on_revoked`, which ends every connection whose principal the event `revokes`:
the connection sends its protocol's closing frames and closes with 4401 `auth.credential_revoked`
(docs/realtime.md, docs/chat-ws.md, docs/octavus-sessions.md).

Backstop for an event that never arrives (auth could not publish it, this gateway was cut from
NATS): every `gateway_reverify_interval_s` each connection's credential is verified again through
the `AuthClient`, taking only a cached answer younger than `REVERIFY_MAX_AGE_S` (connections sharing
a credential and due together cost one request). An
`auth.credential_revoked` or `auth.unauthenticated` answer ends the connection the same way.
Expiry does not (it is checked when a connection opens, and `/chat/ws` runs its own expiry and
refresh), nor does auth being unreachable for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

import structlog

from parley_common.auth_client import AuthClient
from parley_common.auth_contract import Principal, RevokedEvent
from parley_common.errors import Codes, ErrorCode, ParleyError

log = structlog.get_logger(__name__)

Protocol = Literal["realtime", "chat", "octavus"]
# Ends the connection with this code. Called from the event handler: it must not block (the
# connection's own task sends the closing frames).
Closer = Callable[[ErrorCode], None]

# What a re-verification answers when the credential is gone for good.
_GONE = frozenset({Codes.CREDENTIAL_REVOKED.code, Codes.UNAUTHENTICATED.code})
_REVERIFY_CONCURRENCY = 32
# The backstop takes a cached verification only this fresh: it exists for when the cache was not
# told (a lost revocation event).
REVERIFY_MAX_AGE_S = 1.0


@dataclass(eq=False)
class Live:
    """One open connection: who it runs as, on which credential, and how to end it."""

    protocol: Protocol
    principal: Principal
    credential: str = field(repr=False)  # verified again by the backstop; never logged
    close: Closer = field(repr=False)
    next_check: float = 0.0
    ended: bool = False

    def credential_keys(self) -> set[UUID]:
        """The credential ids whose revocation ends this connection."""
        # A client token ends with the API key or the browser session that minted it.
        minted_by = {self.principal.api_key_id, self.principal.session_id} - {None}
        return {self.principal.credential_id} | {k for k in minted_by if k is not None}


class LiveConnections:
    def __init__(self, auth: AuthClient, reverify_interval_s: float) -> None:
        self.auth = auth
        self.interval = reverify_interval_s
        self._live: set[Live] = set()
        self._by_credential: dict[UUID, set[Live]] = {}
        self._by_user: dict[UUID, set[Live]] = {}
        self._checks: set[asyncio.Task[bool]] = set()

    def __len__(self) -> int:
        return len(self._live)

    # ----------------------------------------------------------------------------- registration

    def add(self, protocol: Protocol, principal: Principal, credential: str, close: Closer) -> Live:
        live = Live(protocol, principal, credential, close, next_check=time.monotonic() + self.interval)
        self._index(live)
        # An event that arrived between the connection's verification and now found nothing to
        # close here; it did clear the AuthClient cache, so this check asks auth again (otherwise
        # it is a cache hit and costs nothing).
        task = asyncio.create_task(self._check(live), name="verify-new-connection")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return live

    def replace(self, live: Live, principal: Principal, credential: str) -> None:
        """The connection now runs on another credential (a chat `token-refresh`)."""
        self._unindex(live)
        live.principal, live.credential = principal, credential
        live.next_check = time.monotonic() + self.interval
        self._index(live)

    def remove(self, live: Live) -> None:
        live.ended = True
        self._unindex(live)

    def _index(self, live: Live) -> None:
        self._live.add(live)
        for key in live.credential_keys():
            self._by_credential.setdefault(key, set()).add(live)
        if live.principal.user_id is not None:
            self._by_user.setdefault(live.principal.user_id, set()).add(live)

    def _unindex(self, live: Live) -> None:
        self._live.discard(live)
        for index, keys in (
            (self._by_credential, live.credential_keys()),
            (self._by_user, {live.principal.user_id} if live.principal.user_id else set()),
        ):
            for key in keys:
                lives = index.get(key)
                if lives is not None:
                    lives.discard(live)
                    if not lives:
                        del index[key]

    # ----------------------------------------------------------------------------- ending

    def _end(self, live: Live, code: ErrorCode, source: str) -> None:
        if live.ended:
            return
        self.remove(live)
        log.info(
            "gateway.connection_revoked",
            protocol=live.protocol,
            credential_kind=live.principal.kind.value,
            credential_id=str(live.principal.credential_id),
            source=source,
            code=code.code,
        )
        try:
            live.close(code)
        except Exception:
            log.exception("gateway.revoke_close_failed", protocol=live.protocol)

    async def on_revoked(self, event: RevokedEvent) -> None:
        """Ends every connection the event revokes (each gateway replica gets every event)."""
        candidates: set[Live] = set()
        for credential_id in event.credential_ids:
            candidates |= self._by_credential.get(credential_id, set())
        if event.user_id is not None and event.user_kinds:
            candidates |= self._by_user.get(event.user_id, set())
        for live in candidates:
            if event.revokes(live.principal):
                self._end(live, Codes.CREDENTIAL_REVOKED, "event")

    # ----------------------------------------------------------------------------- backstop

    async def _check(self, live: Live, max_age_s: float | None = None) -> bool:
        """Verify the connection's credential again; True if that ended the connection."""
        credential = live.credential
        try:
            await self.auth.verify(credential, max_age_s=max_age_s)
        except ParleyError as exc:
            # Only if the credential is still the connection's (a chat refresh may have moved on).
            if exc.code.code in _GONE and live.credential == credential:
                self._end(live, exc.code, "reverify")
                return True
        except Exception as exc:  # auth unreachable: keep the connection, try again later
            log.warning("gateway.reverify_failed", protocol=live.protocol, error=str(exc))
        live.next_check = time.monotonic() + self.interval
        return False

    async def reverify_due(self) -> int:
        """Verify again every connection due for it; the number of connections ended."""
        now = time.monotonic()
        due = [live for live in self._live if live.next_check <= now]
        gate = asyncio.Semaphore(_REVERIFY_CONCURRENCY)

        async def check(live: Live) -> bool:
            async with gate:
                return await self._check(live, REVERIFY_MAX_AGE_S)

        return sum(await asyncio.gather(*(check(live) for live in due)))

    async def run(self) -> None:
        """The backstop loop (a task of the gateway's lifespan)."""
        tick = min(1.0, self.interval / 4)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.reverify_due()
            except Exception:
                log.exception("gateway.reverify_pass_failed")
