"""Bus: `auth.verify` and `auth.authorize`, request/reply in the `auth` queue group."""

from __future__ import annotations

from faststream.nats import NatsBroker

from parley_auth.context import AuthContext
from parley_auth.orgs import service as orgs
from parley_auth.verification import verify_credential
from parley_common import subjects
from parley_common.auth_contract import AuthorizeReply, AuthorizeRequest, VerifyReply, VerifyRequest
from parley_common.bus import bus_handler
from parley_common.errors import Codes, ParleyError


def register(broker: NatsBroker, ctx: AuthContext) -> None:
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
