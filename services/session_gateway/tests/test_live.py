"""`LiveConnections` on its own: which connections an event ends, and the re-verification backstop.

Auth here is a table of answers per credential (what `AuthClient.verify` would say); the whole path
over the real bus and sockets is tests/e2e/test_revocation.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from parley_common.auth_contract import CredentialKind, Principal, RevokedEvent
from parley_common.errors import Codes, ErrorCode, ParleyError
from parley_session_gateway.live import REVERIFY_MAX_AGE_S, LiveConnections

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


class Answers:
    """Stands in for `AuthClient.verify`: an error code per credential, else valid."""

    def __init__(self) -> None:
        self.errors: dict[str, ErrorCode] = {}
        self.asked: list[str] = []
        self.max_ages: list[float | None] = []

    async def verify(self, credential: str, *, max_age_s: float | None = None) -> None:
        self.asked.append(credential)
        self.max_ages.append(max_age_s)
        if credential in self.errors:
            raise ParleyError(self.errors[credential])


class Closed:
    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    def closer(self, name: str) -> Any:
        return lambda code: self.codes.setdefault(name, code.code)


def who(kind: CredentialKind, user: uuid.UUID, api_key_id: uuid.UUID | None = None) -> Principal:
    return Principal(kind=kind, credential_id=uuid.uuid4(), user_id=user, api_key_id=api_key_id)


async def test_an_event_ends_exactly_the_connections_it_revokes() -> None:
    live, closed = LiveConnections(Answers(), 30.0), Closed()  # type: ignore[arg-type]
    key = who(CredentialKind.API_KEY, ALICE)
    token = who(CredentialKind.CLIENT_TOKEN, ALICE, api_key_id=key.credential_id)
    cookie = who(CredentialKind.SESSION, ALICE)
    bob_key = who(CredentialKind.API_KEY, BOB)
    for name, p in {"key": key, "token": token, "chat": token, "cookie": cookie, "bob": bob_key}.items():
        live.add("realtime", p, name, closed.closer(name))
    assert len(live) == 5

    await live.on_revoked(RevokedEvent(credential_ids=[key.credential_id], at=datetime.now(UTC)))
    assert closed.codes == dict.fromkeys(["key", "token", "chat"], "auth.credential_revoked")
    assert len(live) == 2

    # Bob's logout everywhere ends nothing of Alice's (and Bob has no cookie connection).
    sessions = [CredentialKind.SESSION]
    await live.on_revoked(RevokedEvent(user_id=BOB, user_kinds=sessions, at=datetime.now(UTC)))
    assert set(closed.codes) == {"key", "token", "chat"}
    await live.on_revoked(RevokedEvent(user_id=ALICE, user_kinds=sessions, at=datetime.now(UTC)))
    assert "cookie" in closed.codes and "bob" not in closed.codes and len(live) == 1


async def test_a_connection_that_moved_to_another_credential_follows_it() -> None:
    live, closed = LiveConnections(Answers(), 30.0), Closed()  # type: ignore[arg-type]
    first = who(CredentialKind.CLIENT_TOKEN, ALICE, api_key_id=uuid.uuid4())
    fresh = who(CredentialKind.CLIENT_TOKEN, ALICE, api_key_id=uuid.uuid4())
    entry = live.add("chat", first, "first", closed.closer("chat"))
    live.replace(entry, fresh, "fresh")  # a token-refresh
    await live.on_revoked(RevokedEvent(credential_ids=[first.api_key_id], at=datetime.now(UTC)))
    assert closed.codes == {}
    await live.on_revoked(RevokedEvent(credential_ids=[fresh.api_key_id], at=datetime.now(UTC)))
    assert closed.codes == {"chat": "auth.credential_revoked"}
    # Removed connections are forgotten: a later event finds nothing.
    gone = live.add("realtime", first, "first", closed.closer("gone"))
    live.remove(gone)
    await live.on_revoked(RevokedEvent(credential_ids=[first.credential_id], at=datetime.now(UTC)))
    assert "gone" not in closed.codes and len(live) == 0


async def test_the_backstop_ends_revoked_and_unknown_credentials_only() -> None:
    answers, closed = Answers(), Closed()
    live = LiveConnections(answers, 0.05)  # type: ignore[arg-type]
    names = ("revoked", "gone", "expired", "auth-down", "fine")
    for name in names:
        live.add("realtime", who(CredentialKind.API_KEY, ALICE), name, closed.closer(name))
    await asyncio.sleep(0.06)  # the checks at registration ran (all fine), the interval passed
    assert sorted(answers.asked) == sorted(names) and closed.codes == {}
    # Then, without any event, auth answers otherwise.
    answers.errors = {
        "revoked": Codes.CREDENTIAL_REVOKED,
        "gone": Codes.UNAUTHENTICATED,
        "expired": Codes.CREDENTIAL_EXPIRED,  # checked at connect; chat has its own expiry
        "auth-down": Codes.BUS_TIMEOUT,
    }
    asked = len(answers.asked)
    assert await live.reverify_due() == 2
    assert closed.codes == {"revoked": "auth.credential_revoked", "gone": "auth.unauthenticated"}
    # At registration a cached answer does; the backstop takes only a fresh one (lost events).
    assert answers.max_ages[:asked] == [None] * asked
    assert answers.max_ages[asked:] == [REVERIFY_MAX_AGE_S] * len(names)
    assert len(live) == 3
    # Not due again before the interval.
    asked = len(answers.asked)
    assert await live.reverify_due() == 0 and len(answers.asked) == asked


async def test_a_new_connection_is_checked_once_at_once() -> None:
    """An event between the handshake's verification and the registration found nothing to end:
    the registration's own check (a cache hit when nothing happened) catches it."""
    answers, closed = Answers(), Closed()
    live = LiveConnections(answers, 30.0)  # type: ignore[arg-type]
    answers.errors["late"] = Codes.CREDENTIAL_REVOKED
    live.add("realtime", who(CredentialKind.SESSION, ALICE), "late", closed.closer("late"))
    live.add("realtime", who(CredentialKind.SESSION, ALICE), "fine", closed.closer("fine"))
    for _ in range(100):
        if len(answers.asked) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(answers.asked) == ["fine", "late"] and closed.codes == {"late": "auth.credential_revoked"}


async def test_a_token_minted_by_a_session_ends_with_that_session_s_logout() -> None:
    """A browser's call (a WebRTC media worker's socket) runs on a client token its page's session
    minted: logging that session out ends it, and no other session's logout does."""
    live, closed = LiveConnections(Answers(), 30.0), Closed()  # type: ignore[arg-type]
    session, other_session = uuid.uuid4(), uuid.uuid4()
    token = Principal(
        kind=CredentialKind.CLIENT_TOKEN, credential_id=uuid.uuid4(), user_id=ALICE, session_id=session
    )
    live.add("realtime", token, "call", closed.closer("call"))
    await live.on_revoked(RevokedEvent(credential_ids=[other_session], at=datetime.now(UTC)))
    assert closed.codes == {}
    await live.on_revoked(RevokedEvent(credential_ids=[session], at=datetime.now(UTC)))
    assert closed.codes == {"call": "auth.credential_revoked"} and len(live) == 0
