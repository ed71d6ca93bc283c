"""The gateway's `BusMediaEdge`: what it sends a media worker, and how each outcome reaches the
offer's answer (the SDP, the worker's refusal, no worker at all, a client token that cannot be
minted). A stand-in media worker answers on the real bus; auth is a stub."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from faststream.nats import NatsBroker

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, MintTokenReply, Principal
from parley_common.catalog_contract import AgentAccessReply
from parley_common.errors import Codes, ParleyError, envelope
from parley_devstack.testing import subscribed
from parley_session_gateway.webrtc.media import BusMediaEdge, MintFailed
from parley_session_gateway.webrtc.sdp import parse_offer

from .test_sdp import CHROMIUM

AGENT = str(uuid.uuid4())
PRINCIPAL = Principal(kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=uuid.uuid4())


@dataclass
class Auth:
    """`AuthClient.mint_token` as auth would answer it, or failing with `error`."""

    error: Exception | None = None
    asked: list[tuple[str, str, int]] | None = None

    async def mint_token(self, credential: str, agent_id: str, *, ttl_seconds: int) -> MintTokenReply:
        self.asked = [*(self.asked or []), (credential, agent_id, ttl_seconds)]
        if self.error is not None:
            raise self.error
        return MintTokenReply(ok=True, token="minted-call-token", token_id=uuid.uuid4())


@pytest.fixture
async def broker(infra: Any) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(infra.nats_url)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def worker(infra: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """A media worker that refuses agent `refuse-me` as /realtime would, and answers the rest."""
    seen: list[dict[str, Any]] = []
    nc = await nats.connect(infra.nats_url)

    async def answer(msg: Any) -> None:
        request = json.loads(msg.data)
        seen.append(request)
        busy = (
            request["agent_id"] == "busy-once" and len([r for r in seen if r["agent_id"] == "busy-once"]) == 1
        )
        if request["agent_id"] == "always-busy" or busy:
            error = envelope(Codes.WEBRTC_MEDIA_UNAVAILABLE).model_dump(mode="json", exclude_none=True)
            reply: dict[str, Any] = {"ok": False, "error": error}
        elif request["agent_id"] == "refuse-me":
            error = envelope(Codes.REALTIME_TOKEN_SCOPE_MISMATCH).model_dump(mode="json", exclude_none=True)
            reply = {"ok": False, "error": error}
        else:
            reply = {"ok": True, "sdp": "v=0\r\nanswer\r\n", "worker_id": "m1", "conversation_id": "c1"}
        await msg.respond(json.dumps(reply).encode())

    sub = await nc.subscribe(subjects.MEDIA_WEBRTC_OFFER, queue=subjects.QUEUE_MEDIA, cb=answer)
    await subscribed(nc)
    yield seen
    await sub.unsubscribe()
    await nc.close()


def edge(broker: NatsBroker, auth: Auth, timeout: float = 2.0) -> BusMediaEdge:
    return BusMediaEdge(broker, auth, token_ttl_s=120, answer_timeout_s=timeout)  # type: ignore[arg-type]


def agent(agent_id: str = AGENT) -> AgentAccessReply:
    return AgentAccessReply(ok=True, agent_id=agent_id)


async def test_an_offer_reaches_a_worker_with_a_token_minted_for_the_call(
    broker: NatsBroker, worker: list[dict[str, Any]]
) -> None:
    auth = Auth()
    offer = parse_offer(CHROMIUM)
    answer = await edge(broker, auth).answer(offer, agent(), PRINCIPAL, "caller-cookie")
    assert answer == "v=0\r\nanswer\r\n"
    # Minted from the caller's own credential, for this agent, short-lived.
    assert auth.asked == [("caller-cookie", AGENT, 120)]
    (sent,) = worker
    assert sent["agent_id"] == AGENT and sent["sdp"] == offer.sdp
    assert sent["token"] == "minted-call-token"  # whole on the bus (the worker opens /realtime with it)
    assert sent["caller"] == str(PRINCIPAL.user_id)


async def test_a_worker_s_refusal_is_the_offer_s_error(
    broker: NatsBroker, worker: list[dict[str, Any]]
) -> None:
    with pytest.raises(ParleyError) as caught:
        await edge(broker, Auth()).answer(parse_offer(CHROMIUM), agent("refuse-me"), PRINCIPAL, "c")
    assert caught.value.code is Codes.REALTIME_TOKEN_SCOPE_MISMATCH
    assert caught.value.status == Codes.REALTIME_TOKEN_SCOPE_MISMATCH.status


async def test_no_worker_is_media_unavailable(broker: NatsBroker) -> None:
    with pytest.raises(ParleyError) as caught:
        await edge(broker, Auth(), timeout=0.3).answer(parse_offer(CHROMIUM), agent(), PRINCIPAL, "c")
    assert caught.value.code is Codes.WEBRTC_MEDIA_UNAVAILABLE and caught.value.status == 503


async def test_a_token_that_cannot_be_minted(broker: NatsBroker, worker: list[dict[str, Any]]) -> None:
    offer = parse_offer(CHROMIUM)
    # auth away: the contract's 502 (the router answers `{error, status}`); nothing was sent.
    with pytest.raises(MintFailed):
        await edge(broker, Auth(error=ParleyError(Codes.BUS_TIMEOUT))).answer(offer, agent(), PRINCIPAL, "c")
    # auth refuses (the credential was revoked meanwhile): its own envelope.
    with pytest.raises(ParleyError) as caught:
        await edge(broker, Auth(error=ParleyError(Codes.CREDENTIAL_REVOKED))).answer(
            offer, agent(), PRINCIPAL, "c"
        )
    assert caught.value.code is Codes.CREDENTIAL_REVOKED
    assert worker == []


async def test_a_full_worker_s_refusal_is_asked_again(
    broker: NatsBroker, worker: list[dict[str, Any]]
) -> None:
    offer = parse_offer(CHROMIUM)
    assert await edge(broker, Auth()).answer(offer, agent("busy-once"), PRINCIPAL, "c") == "v=0\r\nanswer\r\n"
    assert len(worker) == 2  # refused once (that worker was full), then answered
    with pytest.raises(ParleyError) as caught:
        await edge(broker, Auth()).answer(offer, agent("always-busy"), PRINCIPAL, "c")
    assert caught.value.code is Codes.WEBRTC_MEDIA_UNAVAILABLE
    assert len(worker) == 2 + 3  # three tries in all, then 503
