"""`auth.verify` and `auth.authorize` over the real NATS bus, as another service sees them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker

from parley_auth.settings import AuthSettings
from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, MemberRole, VerifyReply
from parley_common.bus import make_broker
from parley_common.errors import ParleyError
from parley_common.settings import CommonSettings

from .support import Accounts


@pytest.fixture
async def peer(auth_settings: AuthSettings, auth_app: object) -> AsyncIterator[tuple[NatsBroker, AuthClient]]:
    """A broker and auth client as in another service (long cache TTL: revocation must beat it)."""
    broker = make_broker(CommonSettings(nats_url=auth_settings.nats_url, service_name="peer"))
    client = AuthClient(broker, cache_ttl_s=60.0)
    await broker.start()
    yield broker, client
    await broker.stop()


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


async def test_revocation_visible_within_one_second(
    accounts: Accounts, peer: tuple[NatsBroker, AuthClient]
) -> None:
    _, auth = peer
    user = await accounts.create()
    key = await user.api_key()
    session = user.client.cookies["kivox_session"]
    await auth.verify(key)
    await auth.verify(session)  # both now cached for 60 s in the peer
    key_id = (await user.client.get("/auth/api-keys")).json()[0]["id"]
    assert (await user.client.delete(f"/auth/api-keys/{key_id}")).status_code == 204
    await _rejected_within(auth, key, 1.0)
    assert (await user.client.delete("/auth/sessions/me")).status_code == 204
    await _rejected_within(auth, session, 1.0)
