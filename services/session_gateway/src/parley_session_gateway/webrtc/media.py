"""The gateway's `MediaEdge`: a checked offer goes to any media worker over the bus.

The worker gets the offer, the agent, and a client token minted here for that agent and the
caller (`auth.token.mint`, rooted in the caller's own credential, as `POST /api/realtime-token`
does): it opens this gateway's `/realtime` with it, so the call can do exactly what the caller
could, and is cut when the caller's credential is revoked. The token is never logged.
"""

from __future__ import annotations

import time

import structlog
from faststream.nats import NatsBroker
from pydantic import SecretStr

from parley_common.auth_client import AuthClient
from parley_common.auth_contract import Principal
from parley_common.catalog_contract import AgentAccessReply
from parley_common.errors import Codes, ParleyError, reply_error
from parley_common.media_contract import MediaOfferRequest
from parley_common.outages import describe, is_outage
from parley_session_gateway import bus
from parley_session_gateway.webrtc.sdp import Offer

log = structlog.get_logger(__name__)

# Offers refused by a full worker are asked again this many times in all (within the timeout).
BUSY_ATTEMPTS = 3


class MintFailed(Exception):
    """The call's client token could not be minted (auth or the bus away): the contract's 502."""


class BusMediaEdge:
    def __init__(
        self, broker: NatsBroker, auth: AuthClient, *, token_ttl_s: int, answer_timeout_s: float
    ) -> None:
        self.broker = broker
        self.auth = auth
        self.token_ttl_s = token_ttl_s
        self.answer_timeout_s = answer_timeout_s

    async def answer(
        self, offer: Offer, agent: AgentAccessReply, principal: Principal, credential: str
    ) -> str:
        agent_id = agent.agent_id or ""
        try:
            minted = await self.auth.mint_token(credential, agent_id, ttl_seconds=self.token_ttl_s)
        except ParleyError as exc:
            if exc.status < 500:
                raise  # a refusal (the credential was revoked meanwhile): its own envelope
            log.warning("webrtc.mint_failed", code=exc.code.code, agent_id=agent_id)
            raise MintFailed(exc.code.code) from exc
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("webrtc.mint_failed", error=describe(exc), agent_id=agent_id)
            raise MintFailed("service.unavailable") from exc
        assert minted.token is not None
        offer_request = MediaOfferRequest(
            sdp=offer.sdp,
            agent_id=agent_id,
            token=SecretStr(minted.token),
            caller=str(principal.user_id or principal.credential_id),
        )
        deadline = time.monotonic() + self.answer_timeout_s
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                reply = await bus.media_offer(
                    self.broker, offer_request, timeout_s=max(0.1, deadline - time.monotonic())
                )
            except ParleyError as exc:
                if exc.code is Codes.BUS_TIMEOUT:
                    # No media worker answered (none running, or all stuck): the call cannot be taken.
                    log.warning("webrtc.no_media_worker", agent_id=agent_id)
                    raise ParleyError(Codes.WEBRTC_MEDIA_UNAVAILABLE) from exc
                raise
            busy = reply.error is not None and reply.error.code == Codes.WEBRTC_MEDIA_UNAVAILABLE.code
            # A full (or stopping) worker refused it: the queue group picks a worker at random, so
            # asking again most likely reaches another one.
            if not busy or attempt == BUSY_ATTEMPTS or time.monotonic() >= deadline:
                break
        if reply.ok and reply.sdp:
            log.info(
                "webrtc.answered",
                agent_id=agent_id,
                conversation_id=reply.conversation_id,
                worker_id=reply.worker_id,
                call_id=reply.peer_id,
            )
            return reply.sdp
        if reply.error is None:
            raise ParleyError(
                Codes.WEBRTC_ANSWER_FAILED, params={"detail": "the media worker gave no answer"}
            )
        raise reply_error(reply.error, Codes.WEBRTC_ANSWER_FAILED)
