"""Every bus subscription of the auth service, declared here next to its handler.

- `auth.verify`, `auth.authorize`, `auth.token.mint`: request/reply in the queue group `auth`, so
  each request reaches one replica.
- `mail.send` (stream `MAIL`): the durable pull consumer `auth-mail` shared by the replicas, which
  queues the mail other services ask for in the outbox (mail/inbox.py).
- `health.ping.auth`: answered by the service kit (parley_common.kit.service).

What auth publishes (`auth.events.revoked`) is in context.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_auth.context import AuthContext
from parley_auth.mail.inbox import MailInbox
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
from parley_common.kit.service import ServiceKit


def register(kit: ServiceKit, ctx: AuthContext) -> None:
    broker = kit.broker

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

    inbox = MailInbox(ctx.db.sessions)

    @kit.part
    @asynccontextmanager
    async def mail_inbox(app: FastAPI) -> AsyncIterator[None]:
        await inbox.start(broker.connection)
        try:
            yield
        finally:
            await inbox.stop()
