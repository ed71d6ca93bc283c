"""HTTP: /auth/api-keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import Path, Request, Response, status
from sqlalchemy import ColumnElement, and_, or_, select

from parley_auth.apikeys import schemas
from parley_auth.apikeys.models import ApiKey
from parley_auth.deps import Ctx, Db, KeysReader, KeysWriter, client_ip
from parley_auth.orgs import service as orgs
from parley_auth.routing import contract_router, no_content
from parley_auth.security import credentials
from parley_common.auth_contract import CredentialKind, MemberRole, Principal
from parley_common.errors import Codes, ParleyError

router = contract_router("auth")
KeyID = Annotated[UUID, Path(alias="keyID")]


def _owned_by(principal: Principal) -> ColumnElement[bool]:
    """The keys this credential manages: the user's own and those they made for orgs; for an org's
    key, only the keys of that org its creator made (never personal or other orgs' keys)."""
    if principal.org_id is not None:
        return and_(ApiKey.owner_org_id == principal.org_id, ApiKey.created_by_user_id == principal.user_id)
    return or_(ApiKey.created_by_user_id == principal.user_id, ApiKey.owner_user_id == principal.user_id)


@router.get(
    "/auth/api-keys",
    summary="List API keys owned by the authenticated user",
    description="With an organization's API key: only the keys of that organization its creator made.",
)
async def list_api_keys(db: Db, principal: KeysReader) -> list[schemas.AuthAPIKey]:
    rows = await db.scalars(
        select(ApiKey).where(_owned_by(principal), ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at)
    )
    return [schemas.AuthAPIKey.model_validate(r, from_attributes=True) for r in rows]


@router.post("/auth/api-keys", status_code=status.HTTP_201_CREATED, summary="Create a new API key")
async def create_api_key(
    body: schemas.CreateAPIKeyRequest,
    request: Request,
    ctx: Ctx,
    db: Db,
    principal: KeysWriter,
) -> schemas.AuthAPIKeyResponse:
    assert principal.user_id is not None
    await ctx.limiter.hit("keys:ip", ctx.settings.auth_rate_key_create_ip, client_ip(request))
    await ctx.limiter.hit("keys:account", ctx.settings.auth_rate_key_create_account, str(principal.user_id))
    scopes = body.scopes if body.scopes is not None else ["*"]
    # A key can never hold more than the credential that creates it.
    if principal.kind is CredentialKind.API_KEY and "*" not in principal.scopes:
        extra = sorted(set(scopes) - set(principal.scopes))
        if extra:
            raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": extra[0]})
    # An org's key makes keys of its org only (resolve fences it), and its creator must still be an
    # admin there, as when the first org key was made.
    org_id = principal.org_id
    if body.org_slug is not None:
        org, _ = await orgs.resolve(db, principal, MemberRole.ADMIN, slug=body.org_slug)
        org_id = org.id
    elif org_id is not None:
        await orgs.resolve(db, principal, MemberRole.ADMIN, org_id=org_id)
    raw = credentials.new_api_key()
    row = ApiKey(
        owner_user_id=None if org_id else principal.user_id,
        owner_org_id=org_id,
        created_by_user_id=principal.user_id,
        name=body.name,
        prefix=credentials.api_key_display_prefix(raw),
        key_hash=credentials.token_hash(ctx.settings.auth_token_secret, raw),
        scopes=scopes,
        expires_at=body.expires_at,
        created_at=datetime.now(UTC),
    )
    db.add(row)
    await db.commit()
    return schemas.AuthAPIKeyResponse.of(row, key=raw)


@router.delete("/auth/api-keys/{keyID}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API key")
async def revoke_api_key(key_id: KeyID, ctx: Ctx, db: Db, principal: KeysWriter) -> Response:
    row = await db.scalar(
        select(ApiKey).where(ApiKey.id == key_id, _owned_by(principal), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        raise ParleyError(Codes.NOT_FOUND, params={"resource": "API key"})
    row.revoked_at = datetime.now(UTC)
    await db.commit()
    await ctx.publish_revoked(kind=CredentialKind.API_KEY, credential_ids=[row.id])
    return no_content()
