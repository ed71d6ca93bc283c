"""Bus: `auth.verify`, `auth.authorize` and `auth.token.mint`, request/reply in the `auth` queue group,
and the service's `health.ping.auth`."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker

from parley_auth.context import AuthContext
from parley_auth.orgs import service as orgs
from parley_auth.tokens import service as tokens
from parley_auth.verification import verify_credential
from parley_common import subjects
from parley_common.auth_contract import (
    AuthorizeReply,
    AuthorizeRequest,
    MintTokenReply,
    MintTokenRequest,
    VerifyReply,
    VerifyRequest,
)
from parley_common.bus import bus_handler
from parley_common.errors import Codes, ParleyError


def register(broker: NatsBroker, ctx: AuthContext) -> None:
    name = ctx.settings.service_name

    # Queue group: any one replica answering proves the service is reachable over the bus.
    @broker.subscriber(subjects.health_ping(name), queue=name)
    async def health() -> dict[str, Any]:
        return {"service": name, "ok": True}

    @broker.subscriber(subjects.AUTH_VERIFY, queue=subjects.QUEUE_AUTH)
    @bus_handler(VerifyRequest)
    async def verify(req: VerifyRequest) -> VerifyReply:
        async with ctx.db.sessions() as db:
            principal = await verify_credential(db, ctx.settings, req.credential, req.kind)
        return VerifyReply(ok=True, principal=principal)

    @broker.subscriber(subjects.AUTH_AUTHORIZE, queue=subjects.QUEUE_AUTH)
    @bus_handler(AuthorizeRequest)
    async def authorize(req: AuthorizeRequest) -> AuthorizeReply:
        if (req.org_id is None) == (req.org_slug is None):
            raise ParleyError(Codes.BUS_BAD_MESSAGE, params={"detail": "exactly one of org_id, org_slug"})
        async with ctx.db.sessions() as db:
            # Re-verify nothing here: the principal came from auth.verify; roles are read live.
            org, role = await orgs.resolve(
                db, req.principal, req.min_role, slug=req.org_slug, org_id=req.org_id
            )
        return AuthorizeReply(ok=True, org_id=org.id, role=role)

    @broker.subscriber(subjects.AUTH_TOKEN_MINT, queue=subjects.QUEUE_AUTH)
    @bus_handler(MintTokenRequest)
    async def mint_token(req: MintTokenRequest) -> MintTokenReply:
        async with ctx.db.sessions() as db:
            # The caller's own credential, verified here: a service cannot mint for a principal it
            # merely claims to be serving.
            principal = await verify_credential(db, ctx.settings, req.credential)
            token, row = await tokens.mint_for_caller(
                db,
                ctx.settings,
                principal,
                agent_id=req.agent_id,
                token_type=req.token_type,
                ttl_seconds=req.ttl_seconds,
            )
            await db.commit()
        return MintTokenReply(ok=True, token=token, token_id=row.id, expires_at=row.expires_at)
