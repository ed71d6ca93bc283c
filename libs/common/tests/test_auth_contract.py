"""What a revocation event revokes, and credentials the auth client refuses without asking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from parley_common.auth_client import AuthClient
from parley_common.auth_contract import MAX_CREDENTIAL_LENGTH, CredentialKind, Principal, RevokedEvent
from parley_common.bus import make_broker
from parley_common.errors import ParleyError
from parley_common.settings import CommonSettings

ALICE, BOB = uuid.uuid4(), uuid.uuid4()
KEY, OTHER_KEY = uuid.uuid4(), uuid.uuid4()


def principal(kind: CredentialKind, user: uuid.UUID, api_key_id: uuid.UUID | None = None) -> Principal:
    return Principal(kind=kind, credential_id=uuid.uuid4(), user_id=user, api_key_id=api_key_id)


def event(**fields: Any) -> RevokedEvent:
    return RevokedEvent(at=datetime.now(UTC), **fields)


def test_a_revoked_key_revokes_itself_and_the_client_tokens_it_minted_only() -> None:
    key = Principal(kind=CredentialKind.API_KEY, credential_id=KEY, user_id=ALICE)
    minted = principal(CredentialKind.CLIENT_TOKEN, ALICE, api_key_id=KEY)
    other = principal(CredentialKind.CLIENT_TOKEN, ALICE, api_key_id=OTHER_KEY)
    cookie = principal(CredentialKind.SESSION, ALICE)
    revoked = event(kind=CredentialKind.API_KEY, credential_ids=[KEY])
    assert revoked.revokes(key) and revoked.revokes(minted)
    assert not revoked.revokes(other) and not revoked.revokes(cookie)


def test_user_wide_events_revoke_the_kinds_they_name_of_that_user_only() -> None:
    alice = {kind: principal(kind, ALICE, KEY if kind == "client_token" else None) for kind in CredentialKind}
    bob_cookie = principal(CredentialKind.SESSION, BOB)
    logout_everywhere = event(user_id=ALICE, user_kinds=[CredentialKind.SESSION])
    assert logout_everywhere.revokes(alice[CredentialKind.SESSION])
    assert not logout_everywhere.revokes(alice[CredentialKind.API_KEY])
    assert not logout_everywhere.revokes(alice[CredentialKind.CLIENT_TOKEN])
    assert not logout_everywhere.revokes(bob_cookie)
    deleted = event(user_id=ALICE, user_kinds=list(CredentialKind))
    assert all(deleted.revokes(p) for p in alice.values()) and not deleted.revokes(bob_cookie)
    # A user id alone (no kinds) revokes nothing user-wide.
    assert not event(user_id=ALICE).revokes(alice[CredentialKind.SESSION])


def test_one_logout_revokes_that_session_only() -> None:
    cookie, other_cookie = principal(CredentialKind.SESSION, ALICE), principal(CredentialKind.SESSION, ALICE)
    logout = event(kind=CredentialKind.SESSION, credential_ids=[cookie.credential_id])
    assert logout.revokes(cookie) and not logout.revokes(other_cookie)


@pytest.mark.parametrize("credential", ["", "x" * (MAX_CREDENTIAL_LENGTH + 1), "sk_live_" + "a" * 100_000])
async def test_credentials_no_one_issues_are_refused_without_the_bus(credential: str) -> None:
    # The broker is never started: asking auth would fail with another error.
    auth = AuthClient(make_broker(CommonSettings(nats_url="nats://127.0.0.1:1")))
    with pytest.raises(ParleyError) as caught:
        await auth.verify(credential)
    assert caught.value.code.code == "auth.unauthenticated"
