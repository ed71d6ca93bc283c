"""`auth.verify` and `auth.authorize` over the real NATS bus, as another service sees them."""

from __future__ import annotations

import asyncio
import email
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker

from parley_auth.security import credentials
from parley_auth.settings import AuthSettings
from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, MemberRole, Principal, RevokedEvent, VerifyReply
from parley_common.bus import bus_events
from parley_common.errors import ParleyError

from .support import Account, Accounts, bus_peer, mail_files, new_client


@pytest.fixture
async def peer(auth_settings: AuthSettings, auth_app: object) -> AsyncIterator[tuple[NatsBroker, AuthClient]]:
    """A broker and auth client as in another service (long cache TTL: revocation must beat it)."""
    async with bus_peer(auth_settings.nats_url, cache_ttl_s=60.0) as value:
        yield value


@dataclass
class Keyed:
    """A fresh user with one API key, and the peer that verifies it."""

    broker: NatsBroker
    auth: AuthClient
    user: Account
    key: str


@pytest.fixture
async def keyed(accounts: Accounts, peer: tuple[NatsBroker, AuthClient]) -> Keyed:
    user = await accounts.create()
    return Keyed(*peer, user, await user.api_key())


async def test_verify_each_credential_kind(accounts: Accounts, peer: tuple[NatsBroker, AuthClient]) -> None:
    _, auth = peer
    user = await accounts.create()
    session = user.client.cookies["kivox_session"]
    key = await user.api_key(scopes=["tokens:mint", "agents:read"])
    p = await auth.verify(session)
    assert p.kind is CredentialKind.SESSION and p.user_id == user.id and p.scopes == ["*"]
    p = await auth.verify(key)
    assert p.kind is CredentialKind.API_KEY and p.scopes == ["agents:read", "tokens:mint"]
    with pytest.raises(ParleyError) as err:
        await auth.verify("sk_live_unknown")
    assert err.value.code.code == "auth.unauthenticated"


async def test_answers_its_health_ping(peer: tuple[NatsBroker, AuthClient]) -> None:
    broker, _ = peer
    msg = await broker.request(b"", subjects.health_ping("auth"), timeout=2.0)
    assert json.loads(msg.body) == {"service": "auth", "ok": True}


async def test_malformed_bus_messages_get_error_replies(peer: tuple[NatsBroker, AuthClient]) -> None:
    broker, _ = peer
    for payload in (b"not json", b"{}", b'{"credential": 5}', b'{"credential": ""}', b"[1,2]"):
        msg = await broker.request(payload, subjects.AUTH_VERIFY, timeout=2.0)
        reply = VerifyReply.model_validate_json(msg.body)
        assert not reply.ok and reply.error is not None and reply.error.code == "bus.bad_message"
    # The handler is still alive after the garbage.
    msg = await broker.request(b'{"credential": "sk_live_x"}', subjects.AUTH_VERIFY, timeout=2.0)
    assert VerifyReply.model_validate_json(msg.body).error.code == "auth.unauthenticated"  # type: ignore[union-attr]
    auth_reply = await broker.request(b'{"principal": {}}', subjects.AUTH_AUTHORIZE, timeout=2.0)
    assert b"bus.bad_message" in auth_reply.body


async def test_authorize_roles_and_cross_org(accounts: Accounts, peer: tuple[NatsBroker, AuthClient]) -> None:
    _, auth = peer
    owner, viewer, outsider = [await accounts.create(t) for t in ("o", "v", "x")]
    slug = f"bus-{owner.id.hex[:8]}"
    org = (await owner.client.post("/orgs", json={"name": "Bus", "slug": slug})).json()
    await owner.client.post(f"/orgs/{slug}/members", json={"user_id": str(viewer.id), "role": "viewer"})

    owner_p = await auth.verify(owner.client.cookies["kivox_session"])
    reply = await auth.authorize(owner_p, MemberRole.ADMIN, org_slug=slug)
    assert reply.role is MemberRole.OWNER and str(reply.org_id) == org["id"]

    viewer_p = await auth.verify(viewer.client.cookies["kivox_session"])
    assert (await auth.authorize(viewer_p, MemberRole.VIEWER, org_id=reply.org_id)).role is MemberRole.VIEWER
    with pytest.raises(ParleyError) as err:
        await auth.authorize(viewer_p, MemberRole.MEMBER, org_slug=slug)
    assert err.value.code.code == "auth.insufficient_role"

    outsider_p = await auth.verify(outsider.client.cookies["kivox_session"])
    with pytest.raises(ParleyError) as err:
        await auth.authorize(outsider_p, MemberRole.VIEWER, org_slug=slug)
    assert err.value.code.code == "resource.not_found"


async def _rejected_within(auth: AuthClient, credential: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await auth.verify(credential)
        except ParleyError:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"credential still accepted {seconds}s after revocation")


async def test_revocation_visible_within_one_second(keyed: Keyed) -> None:
    auth, user, key = keyed.auth, keyed.user, keyed.key
    session = user.client.cookies["kivox_session"]
    await auth.verify(key)
    await auth.verify(session)  # both now cached for 60 s in the peer
    key_id = (await user.client.get("/auth/api-keys")).json()[0]["id"]
    assert (await user.client.delete(f"/auth/api-keys/{key_id}")).status_code == 204
    await _rejected_within(auth, key, 1.0)
    assert (await user.client.delete("/auth/sessions/me")).status_code == 204
    await _rejected_within(auth, session, 1.0)


async def test_each_revocation_event_says_what_it_revokes(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient], auth_settings: AuthSettings
) -> None:
    """What the session gateway matches open connections against (`RevokedEvent.revokes`), for
    every way a credential is revoked, with another user's credentials never matched."""
    _, auth = peer
    events: list[RevokedEvent] = []

    async def record(event: RevokedEvent) -> None:
        events.append(event)

    auth.on_revoked(record)

    async def after(action: Awaitable[httpx.Response]) -> RevokedEvent:
        seen = len(events)
        resp = await action
        assert resp.status_code == 204, resp.text
        deadline = time.monotonic() + 2.0
        while len(events) == seen:
            assert time.monotonic() < deadline, "no revocation event"
            await asyncio.sleep(0.01)
        return events[seen]

    async def mint(key: str) -> str:
        async with new_client(accounts.app, headers={"Authorization": f"Bearer {key}"}) as keyed:
            resp = await keyed.post("/chat/tokens", json={"workflow_id": "wf"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["token"])

    async def login(user: Any) -> tuple[httpx.AsyncClient, Principal]:
        client = new_client(accounts.app)
        accounts.clients.append(client)
        resp = await client.post("/auth/sessions", json={"email": user.email, "password": user.password})
        assert resp.status_code == 201, resp.text
        return client, await auth.verify(client.cookies["kivox_session"])

    alice, bob = await accounts.create("alice"), await accounts.create("bob")
    bob_key = await bob.api_key()
    bystanders = [await auth.verify(bob.client.cookies["kivox_session"]), await auth.verify(bob_key)]
    bystanders.append(await auth.verify(await mint(bob_key)))

    # An API key: itself and every client token it minted.
    key = await alice.api_key()
    keys = (await alice.client.get("/auth/api-keys")).json()
    key_p, token_p = await auth.verify(key), await auth.verify(await mint(key))
    assert token_p.api_key_id == key_p.credential_id
    cookie_p = await auth.verify(alice.client.cookies["kivox_session"])
    revoked = await after(alice.client.delete(f"/auth/api-keys/{keys[0]['id']}"))
    assert revoked.revokes(key_p) and revoked.revokes(token_p) and not revoked.revokes(cookie_p)

    # One logout: that session only.
    other_client, other_p = await login(alice)
    revoked = await after(other_client.delete("/auth/sessions/me"))
    assert revoked.revokes(other_p) and not revoked.revokes(cookie_p)

    # Logging out everywhere: every session of the user, not their keys or tokens.
    key = await alice.api_key()
    key_p, token_p = await auth.verify(key), await auth.verify(await mint(key))
    third_client, third_p = await login(alice)
    revoked = await after(third_client.delete("/auth/sessions"))
    assert revoked.revokes(cookie_p) and revoked.revokes(third_p)
    assert not revoked.revokes(key_p) and not revoked.revokes(token_p)

    # A password reset: every session, not the keys.
    _, fourth_p = await login(alice)
    async with new_client(accounts.app) as anon:
        assert (await anon.post("/auth/password/recover", json={"email": alice.email})).status_code == 204
        deadline = time.monotonic() + 5
        while not (
            mails := [p for p in mail_files(auth_settings.auth_mail_dir) if alice.email in p.read_text()]
        ):
            assert time.monotonic() < deadline, "no reset mail"
            await asyncio.sleep(0.05)
        body = email.message_from_bytes(mails[-1].read_bytes()).get_payload(decode=True)
        assert isinstance(body, bytes)
        reset_token = re.search(r"token=([\w-]+)", body.decode()).group(1)  # type: ignore[union-attr]
        revoked = await after(
            anon.post("/auth/password/reset", json={"token": reset_token, "password": "new secret!"})
        )
    assert revoked.revokes(fourth_p) and not revoked.revokes(key_p) and not revoked.revokes(token_p)

    # Deleting the account: every credential of every kind.
    alice.password = "new secret!"
    fifth_client, fifth_p = await login(alice)
    revoked = await after(fifth_client.delete("/users/me"))
    assert revoked.revokes(fifth_p) and revoked.revokes(key_p) and revoked.revokes(token_p)

    for event in events:
        assert not any(event.revokes(p) for p in bystanders), event


async def test_cached_verifications_stay_off_the_bus_and_one_request_serves_a_burst(keyed: Keyed) -> None:
    auth, key = keyed.auth, keyed.key
    first = auth.requests
    burst = await asyncio.gather(*(auth.verify(key) for _ in range(50)))  # 50 sockets opening at once
    assert {p.credential_id for p in burst} == {burst[0].credential_id}
    assert auth.requests - first == 1
    for _ in range(20):
        await auth.verify(key)
    assert auth.requests - first == 1  # cached: the common case never crosses the bus
    with pytest.raises(ParleyError):
        await auth.verify("sk_live_unknown")
    with pytest.raises(ParleyError):  # a refusal is not cached, and not shared with later callers
        await auth.verify("sk_live_unknown")
    assert auth.requests - first == 3


async def test_an_answer_in_flight_when_a_revocation_arrives_is_not_cached(keyed: Keyed) -> None:
    auth, key = keyed.auth, keyed.key
    asked = asyncio.ensure_future(auth.verify(key))
    await asyncio.sleep(0)  # the request is on its way
    await auth._on_revoked(b'{"at": "2026-01-01T00:00:00Z"}')  # some revocation, arriving meanwhile
    await asked
    before = auth.requests
    await auth.verify(key)
    assert auth.requests == before + 1  # asked again: the earlier answer might predate the revocation


async def test_a_reconnect_forgets_what_was_cached(keyed: Keyed) -> None:
    """Revocations published while a service was cut from NATS never reach it: after a reconnect
    every credential is verified afresh."""
    broker, auth, key = keyed.broker, keyed.auth, keyed.key
    await auth.verify(key)
    before = auth.requests
    await bus_events(broker).reconnected()
    await asyncio.sleep(0.05)  # the hooks run as tasks
    await auth.verify(key)
    assert auth.requests == before + 1


async def test_a_client_token_is_not_cached_past_its_expiry(keyed: Keyed, accounts: Accounts) -> None:
    auth, key = keyed.auth, keyed.key
    async with new_client(accounts.app, headers={"Authorization": f"Bearer {key}"}) as client:
        resp = await client.post("/chat/tokens", json={"workflow_id": "wf", "ttl_seconds": 60})
    token = resp.json()["token"]
    principal = await auth.verify(token)
    assert principal.expires_at is not None
    (deadline, _, _), *_ = [v for k, v in auth._cache.items() if k.endswith(token)]
    assert deadline - time.monotonic() <= 60.5  # the 60 s cache TTL of this peer, but also the token's


async def test_a_backstop_verification_takes_only_a_fresh_cached_answer(keyed: Keyed) -> None:
    auth, key = keyed.auth, keyed.key
    await auth.verify(key)
    before = auth.requests
    await auth.verify(key, max_age_s=5.0)  # cached a moment ago: fresh enough
    assert auth.requests == before
    await asyncio.sleep(0.06)
    await auth.verify(key, max_age_s=0.05)  # older than asked for: auth is asked again
    assert auth.requests == before + 1


class HeldHasher:
    """argon2 that waits for the test before it hashes or checks: while a login is inside it, the
    process must still answer the bus. `stalled` says it waited out its 10 s (nobody released it:
    it held the event loop, so the test could not)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered, self.release, self.stalled = threading.Event(), threading.Event(), threading.Event()

    def _hold(self) -> None:
        self.entered.set()
        if not self.release.wait(10):
            self.stalled.set()

    def hash(self, password: str) -> str:
        self._hold()
        return str(self.inner.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self._hold()
        return bool(self.inner.verify(password_hash, password))

    def check_needs_rehash(self, password_hash: str) -> bool:
        return bool(self.inner.check_needs_rehash(password_hash))


async def test_a_login_hashing_its_password_does_not_hold_up_verification(
    keyed: Keyed, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password's argon2 takes ~0.14 s of CPU here; on the event loop it held up every
    `auth.verify` of the platform behind each login (a burst of sign-ups timed them out)."""
    held = HeldHasher(credentials._hasher)
    monkeypatch.setattr(credentials, "_hasher", held)
    login = asyncio.ensure_future(
        anon.post("/auth/sessions", json={"email": keyed.user.email, "password": keyed.user.password})
    )
    try:
        assert await asyncio.to_thread(held.entered.wait, 10), "the login never reached argon2"
        # A cache miss, as a gateway's first look at a key is: over the bus, to this process.
        msg = await keyed.broker.request(
            json.dumps({"credential": keyed.key}).encode(), subjects.AUTH_VERIFY, timeout=5.0
        )
        reply = VerifyReply.model_validate_json(msg.body)
        assert not held.stalled.is_set(), "argon2 held the event loop"
        assert reply.ok and reply.principal is not None and reply.principal.user_id == keyed.user.id
    finally:
        held.release.set()
        resp = await login
    assert resp.status_code == 201, resp.text
    assert not held.stalled.is_set()
