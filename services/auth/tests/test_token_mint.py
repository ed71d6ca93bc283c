"""`auth.token.mint` over the real bus: short-lived client tokens minted for the caller of
`POST /api/realtime-token`, rooted in the caller's own credential and ended with it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker

from parley_auth.settings import AuthSettings
from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, MintTokenReply, Principal, RevokedEvent
from parley_common.errors import ParleyError

from .support import Accounts, bus_peer, new_client

AGENT = "4f6c1a52-8a57-4a55-9d53-0d6c2f1d1e01"


@pytest.fixture
async def peer(auth_settings: AuthSettings, auth_app: object) -> AsyncIterator[tuple[NatsBroker, AuthClient]]:
    async with bus_peer(auth_settings.nats_url, cache_ttl_s=0) as value:
        yield value


async def refused(auth: AuthClient, credential: str, code: str, agent: str = AGENT) -> None:
    with pytest.raises(ParleyError) as err:
        await auth.mint_token(credential, agent, ttl_seconds=600)
    assert err.value.code.code == code


async def eventually_refused(auth: AuthClient, token: str, code: str) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            await auth.verify(token)
        except ParleyError as exc:
            assert exc.code.code == code
            return
        assert time.monotonic() < deadline, "the token still verifies"
        await asyncio.sleep(0.05)


async def test_a_session_mints_a_token_that_ends_with_the_session(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient]
) -> None:
    _, auth = peer
    user = await accounts.create()
    session = user.client.cookies["kivox_session"]
    reply = await auth.mint_token(session, AGENT, ttl_seconds=600)
    assert reply.token is not None and reply.expires_at is not None
    assert timedelta(seconds=590) < reply.expires_at - datetime.now(UTC) <= timedelta(seconds=600)
    token = await auth.verify(reply.token)
    assert token.kind is CredentialKind.CLIENT_TOKEN and token.agent_id == AGENT
    assert token.credential_id == reply.token_id and token.user_id == user.id
    assert token.api_key_id is None and token.session_id == (await auth.verify(session)).credential_id
    assert token.token_type == "voice" and token.scopes == ["voice:connect"]
    # Logging out that session ends the token, and the revocation event says so.
    assert (await user.client.delete("/auth/sessions/me")).status_code == 204
    await eventually_refused(auth, reply.token, "auth.credential_revoked")
    event = RevokedEvent(kind=CredentialKind.SESSION, credential_ids=[token.session_id], at=datetime.now(UTC))
    assert event.revokes(token)


async def test_logging_out_everywhere_ends_session_minted_tokens(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient]
) -> None:
    _, auth = peer
    user = await accounts.create()
    reply = await auth.mint_token(user.client.cookies["kivox_session"], AGENT, ttl_seconds=600)
    assert reply.token is not None
    token = await auth.verify(reply.token)
    events: list[RevokedEvent] = []

    async def record(event: RevokedEvent) -> None:
        events.append(event)

    auth.on_revoked(record)
    assert (await user.client.delete("/auth/sessions")).status_code == 204
    await eventually_refused(auth, reply.token, "auth.credential_revoked")
    deadline = time.monotonic() + 5
    while not any(e.revokes(token) for e in events):
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.05)
    # Another user's tokens are untouched by it.
    other = await accounts.create()
    other_reply = await auth.mint_token(other.client.cookies["kivox_session"], AGENT, ttl_seconds=600)
    assert other_reply.token is not None
    other_token = await auth.verify(other_reply.token)
    assert not any(e.revokes(other_token) for e in events)


async def test_an_api_key_needs_tokens_mint_and_its_revocation_ends_the_token(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient]
) -> None:
    _, auth = peer
    user = await accounts.create()
    await refused(auth, await user.api_key(scopes=["agents:read"]), "auth.insufficient_scope")
    key = await user.api_key(scopes=["tokens:mint"])
    reply = await auth.mint_token(key, AGENT, ttl_seconds=120, kind="chat")
    assert reply.token is not None
    token = await auth.verify(reply.token)
    assert token.api_key_id == (await auth.verify(key)).credential_id and token.session_id is None
    assert token.token_type == "chat"
    keys = (await user.client.get("/auth/api-keys")).json()
    key_id = next(k["id"] for k in keys if k["scopes"] == ["tokens:mint"])
    assert (await user.client.delete(f"/auth/api-keys/{key_id}")).status_code == 204
    await eventually_refused(auth, reply.token, "auth.credential_revoked")


async def test_a_client_token_mints_only_for_its_agent_and_never_beyond_itself(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient], auth_app: FastAPI
) -> None:
    _, auth = peer
    user = await accounts.create()
    key = await user.api_key(scopes=["tokens:mint"])
    async with new_client(auth_app, headers={"Authorization": f"Bearer {key}"}) as http:
        minted = await http.post(
            "/voice/tokens", json={"workflow_id": AGENT, "ttl_seconds": 120, "data": {"customer": "c-1"}}
        )
    assert minted.status_code == 201, minted.text
    parent_token = minted.json()["token"]
    parent = await auth.verify(parent_token)
    await refused(auth, parent_token, "realtime.token_scope_mismatch", agent="another-agent")
    reply = await auth.mint_token(parent_token, AGENT, ttl_seconds=3600)
    assert reply.token is not None
    child = await auth.verify(reply.token)
    # Same root key, organization, environment and data; no longer-lived than its parent.
    assert (child.api_key_id, child.session_id, child.org_id) == (parent.api_key_id, None, parent.org_id)
    assert child.data == {"customer": "c-1"} and child.env == parent.env
    assert child.expires_at is not None and parent.expires_at is not None
    assert child.expires_at <= parent.expires_at
    assert child.credential_id != parent.credential_id


async def test_bad_requests_and_bad_credentials(peer: tuple[NatsBroker, AuthClient]) -> None:
    broker, auth = peer
    for payload in (b"not json", b"{}", b'{"credential": "x", "agent_id": "a", "ttl_seconds": 5}', b"[]"):
        msg = await broker.request(payload, subjects.AUTH_TOKEN_MINT, timeout=2.0)
        reply = MintTokenReply.model_validate_json(msg.body)
        assert not reply.ok and reply.error is not None and reply.error.code == "bus.bad_message"
    await refused(auth, "sk_live_unknown", "auth.unauthenticated")
    await refused(auth, "not-a-session", "auth.unauthenticated")


def test_principal_without_session_is_not_revoked_by_a_logout_everywhere() -> None:
    """A client token minted with an API key survives its user logging out of every browser."""
    now = datetime.now(UTC)
    user = uuid.uuid4()
    key_token = Principal(
        kind=CredentialKind.CLIENT_TOKEN, credential_id=uuid.uuid4(), user_id=user, api_key_id=uuid.uuid4()
    )
    session_token = key_token.model_copy(update={"api_key_id": None, "session_id": uuid.uuid4()})
    logout_all = RevokedEvent(user_id=user, user_kinds=[CredentialKind.SESSION], at=now)
    assert not logout_all.revokes(key_token) and logout_all.revokes(session_token)
