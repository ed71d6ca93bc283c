"""HTTP: `POST /api/realtime-token`, `GET /api/csrf-token` and `POST /api/realtime/webrtc`, the
ServiceAi voice-session routes (docs/webrtc.md). Statuses and bodies are the contract's.

Any credential kind may call them; `access.bound_agent` decides which agent the request is for. The offer
is checked here (rate limit, credential, binding, CSRF token, SDP); what answers it is the
`MediaEdge` on `app.state.webrtc_media`, and until one is installed a valid offer gets 501
`webrtc.unavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import structlog
from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import SkipJsonSchema

from parley_common import chatty_contract as cc
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.authenticator import Authenticator, credential_of
from parley_common.catalog_contract import AgentAccessReply
from parley_common.chatty_http import BoundAgent
from parley_common.errors import Codes, ParleyError
from parley_common.outages import describe, is_outage
from parley_session_gateway.access import bound_agent
from parley_session_gateway.deps import Gateway, gateway, voice_limiter
from parley_session_gateway.webrtc import csrf
from parley_session_gateway.webrtc.media import MintFailed
from parley_session_gateway.webrtc.sdp import Offer, invalid, parse_offer

log = structlog.get_logger(__name__)
router = APIRouter(tags=["chatty"])


class MediaEdge(Protocol):
    """What answers a checked offer with the SDP answer (the aiortc media edge)."""

    async def answer(
        self, offer: Offer, agent: AgentAccessReply, principal: Principal, credential: str
    ) -> str:
        """The SDP answer. `credential` is the caller's own (to mint the call's client token);
        raises `ParleyError` for an enveloped refusal, `MintFailed` for the contract's 502."""
        ...


class SdpResponse(Response):
    media_type = "application/sdp"


def _media(request: Request) -> MediaEdge | None:
    return getattr(request.app.state, "webrtc_media", None)


_authenticate = Authenticator(allowed_kinds=set(CredentialKind))
Caller = Annotated[Principal, Depends(_authenticate)]


def _error(description: str) -> dict[str, Any]:
    return {"model": cc.ErrorEnvelope, "description": description}


def _component(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


def _json_error(description: str) -> dict[str, Any]:
    """An error of the SDP route, whose own answers are `application/sdp`: said explicitly."""
    schema = {"$ref": _component(cc.ErrorEnvelope)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _caller_key(principal: Principal) -> str:
    """Per user; an end user's client token counts on its own (not on the user who minted it)."""
    if principal.kind is CredentialKind.CLIENT_TOKEN or principal.user_id is None:
        return f"credential:{principal.credential_id}"
    return f"user:{principal.user_id}"


def _fallback(message: str) -> JSONResponse:
    body = cc.RealtimeTokenResponse(fallback=True, directWebRTC=False, useWebRTC=False, message=message)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=500)


@router.post(
    "/api/realtime-token",
    response_model=cc.RealtimeTokenResponse,
    response_model_exclude_none=True,
    operation_id="createRealtimeToken",
    summary="Mint a short-lived realtime client secret for the bound agent (single union object).",
    description=(
        "`clientSecret` is a Parley client token of the bound agent, valid for `expiresInSeconds`: "
        "the `?token=` of the `/realtime` WebSocket, or a bearer credential of "
        "`POST /api/realtime/webrtc`. A mint failure is 500 with `fallback: true`."
    ),
    responses={
        401: _error("Unauthenticated."),
        403: _error("Caller lacks the chatty-voice entitlement."),
        405: _error("Method Not Allowed (POST only)."),
        429: _error("Per-user rate limit on token mint."),
        500: {
            "model": cc.RealtimeTokenResponse,
            "description": "Mint failure — body still carries `fallback: true`.",
        },
    },
)
async def create_realtime_token(
    request: Request,
    ctx: Gateway,
    agent: BoundAgent = None,
    body: Annotated[SkipJsonSchema[None] | cc.RealtimeTokenRequest, Body()] = None,
) -> Any:
    settings = ctx.settings
    try:
        # Inside: auth or the bus being away is a mint failure too (the contract's fallback).
        principal = await _authenticate(request)
        await voice_limiter(request).hit(
            "realtime-token", settings.gateway_rate_realtime_token, _caller_key(principal)
        )
        binding = await bound_agent(ctx.access, principal, agent, timeout_s=settings.bus_request_timeout_s)
        found = credential_of(request, settings.gateway_cookie_name)
        assert found is not None  # the Authenticator verified this very credential
        minted = await ctx.auth.mint_token(
            found[0], binding.agent_id or "", ttl_seconds=settings.gateway_realtime_token_ttl_s
        )
    except ParleyError as exc:
        if exc.status < 500:
            raise
        log.warning("realtime_token.mint_failed", code=exc.code.code)
        return _fallback("The realtime session could not be minted; use the HTTP fallback.")
    except Exception as exc:
        if not is_outage(exc):
            raise
        log.warning("realtime_token.mint_failed", error=describe(exc))
        return _fallback("The realtime session could not be minted; use the HTTP fallback.")
    assert minted.token is not None and minted.expires_at is not None and minted.token_id is not None
    media = _media(request) is not None
    ws = settings.public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/")
    message = (
        "Send the SDP offer to POST /api/realtime/webrtc."
        if media
        else f"WebRTC media is not available on this server yet: use {ws}/realtime?token=<clientSecret>."
    )
    if body is not None and body.directWebRTC:
        message += " Parley terminates WebRTC itself; there is no direct branch."
    return cc.RealtimeTokenResponse(
        sessionId=str(minted.token_id),
        model=binding.model,
        voice=binding.voice,
        clientSecret=minted.token,
        fallback=False,
        directWebRTC=False,
        useWebRTC=media,
        expiresInSeconds=max(0, int((minted.expires_at - datetime.now(UTC)).total_seconds())),
        metadata=cc.RealtimeTokenMetadata(organizationId=str(binding.owner_org_id))
        if binding.owner_org_id
        else None,
        message=message,
    )


@router.get(
    "/api/csrf-token",
    operation_id="getCsrfToken",
    summary="Mint a short-lived CSRF token for the WebRTC SDP exchange.",
    description=(
        "Required as `X-CSRF-Token` on POST /api/realtime/webrtc; bound to the calling credential "
        "for 5 minutes."
    ),
    responses={
        401: _error("Unauthenticated."),
        403: _error("Caller lacks the chatty-voice entitlement."),
    },
)
async def get_csrf_token(ctx: Gateway, principal: Caller, agent: BoundAgent = None) -> cc.CsrfTokenResponse:
    await bound_agent(ctx.access, principal, agent, timeout_s=ctx.settings.bus_request_timeout_s)
    return cc.CsrfTokenResponse(token=await csrf.mint(ctx.redis, principal))


async def _per_ip(request: Request) -> None:
    """3 offers a minute per client address, before anything else is looked at."""
    address = request.client.host if request.client else "unknown"
    limit = gateway(request).settings.gateway_rate_webrtc_ip
    await voice_limiter(request).hit("webrtc-offer", limit, address)


class _OfferRoute(APIRoute):
    """The offer route counts every request against its per-address limit before anything else
    (even before its body is read), and answers a body that is not the contract's `{sdp}` (not
    JSON, no `sdp`, not a string) with its 400 `webrtc.invalid_sdp`, not the platform's 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            await _per_ip(request)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise invalid('the body must be JSON {"sdp": "<offer>"}') from exc

        return handle


offer_router = APIRouter(tags=["chatty"], route_class=_OfferRoute)


@offer_router.post(
    "/api/realtime/webrtc",
    response_class=SdpResponse,
    operation_id="exchangeRealtimeWebrtcSdp",
    summary="WebRTC SDP exchange with Parley's own media edge: offer in, answer out.",
    description=(
        "Body `{ sdp }` (a browser's offer) with `X-CSRF-Token` (GET /api/csrf-token); the answer is "
        "the raw SDP as `application/sdp`. Rate-limited to 3 req/min/IP. Parley's media workers "
        "answer it (docs/webrtc.md); with media turned off a valid offer is answered 501 "
        "`webrtc.unavailable`; 503 `webrtc.media_unavailable` when no media worker can take the call."
    ),
    openapi_extra={
        "parameters": [
            {
                "name": cc.CSRF_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "CSRF token previously minted by GET /api/csrf-token.",
            }
        ],
    },
    responses={
        200: {
            "description": "The SDP answer (text body, not JSON).",
            "content": {"application/sdp": {"schema": {"type": "string"}}},
        },
        400: _json_error("Invalid SDP format."),
        401: _json_error("Unauthenticated."),
        403: _json_error("Caller lacks the chatty-voice entitlement, or CSRF token invalid."),
        429: _json_error("Rate limit (3 req/min/IP)."),
        500: _json_error("SDP exchange failed locally."),
        501: _json_error("Parley: WebRTC media is not available on this server (`webrtc.unavailable`)."),
        503: _json_error("Parley: no media worker could take the call (`webrtc.media_unavailable`)."),
        502: {
            "description": "Local failure minting a client secret.",
            "content": {"application/json": {"schema": cc.RealtimeWebrtcUpstreamError.model_json_schema()}},
        },
        "default": {
            "description": "Any other error: treat a non-200 answer as opaque unless it is JSON.",
            "content": {"application/json": {"schema": {}}, "text/plain": {"schema": {"type": "string"}}},
        },
    },
)
async def exchange_sdp(
    request: Request,
    ctx: Gateway,
    principal: Caller,
    agent: BoundAgent = None,
    body: Annotated[SkipJsonSchema[None] | cc.RealtimeWebrtcRequest, Body()] = None,
) -> Response:
    binding = await bound_agent(ctx.access, principal, agent, timeout_s=ctx.settings.bus_request_timeout_s)
    await csrf.check(ctx.redis, request.headers.get(cc.CSRF_HEADER), principal)
    if body is None:
        raise invalid('the body must be JSON {"sdp": "<offer>"}')
    offer = parse_offer(body.sdp)
    media = _media(request)
    if media is None:
        raise ParleyError(Codes.WEBRTC_UNAVAILABLE)
    found = credential_of(request, ctx.settings.gateway_cookie_name)
    assert found is not None  # the Authenticator verified this very credential
    try:
        answer = await media.answer(offer, binding, principal, found[0])
    except MintFailed:
        upstream = cc.RealtimeWebrtcUpstreamError(
            error="The call's client secret could not be minted.", status=502
        )
        return JSONResponse(upstream.model_dump(exclude_none=True), status_code=502)
    return SdpResponse(answer)


router.include_router(offer_router)
