"""HTTP: /orgs and /orgs/{orgSlug}/members."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Path, Response, status

from parley_auth.deps import AccountWriter, Ctx, Db, OrgReader, OrgWriter
from parley_auth.orgs import schemas, service
from parley_auth.orgs.models import Membership, Org
from parley_auth.routing import contract_router, no_content
from parley_common.auth_contract import CredentialKind, MemberRole

router = contract_router("orgs")
OrgSlug = Annotated[
    str, Path(alias="orgSlug", max_length=64, description="URL-safe organization identifier.")
]
UserID = Annotated[UUID, Path(alias="userID")]


def _org_out(org: Org) -> schemas.Org:
    return schemas.Org.model_validate(org, from_attributes=True)


def _member_out(member: Membership) -> schemas.OrgMember:
    return schemas.OrgMember.model_validate(member, from_attributes=True)


@router.get("/orgs", summary="List organizations the authenticated user belongs to")
async def list_orgs(db: Db, principal: OrgReader) -> list[schemas.Org]:
    return [_org_out(o) for o in await service.list_orgs(db, principal)]


@router.post("/orgs", status_code=status.HTTP_201_CREATED, summary="Create a new organization")
async def create_org(body: schemas.CreateOrgRequest, db: Db, principal: AccountWriter) -> schemas.Org:
    assert principal.user_id is not None
    org = await service.create_org(db, principal.user_id, body.name, body.slug, body.description)
    await db.commit()
    return _org_out(org)


@router.get("/orgs/{orgSlug}", summary="Get an organization by slug")
async def get_org(org_slug: OrgSlug, db: Db, principal: OrgReader) -> schemas.Org:
    org, _ = await service.resolve(db, principal, MemberRole.VIEWER, slug=org_slug)
    return _org_out(org)


@router.patch("/orgs/{orgSlug}", summary="Update an organization (requires admin)")
async def update_org(
    org_slug: OrgSlug, body: schemas.UpdateOrgRequest, db: Db, principal: OrgWriter
) -> schemas.Org:
    org, _ = await service.resolve(db, principal, MemberRole.ADMIN, slug=org_slug)
    await service.update_org(db, org, body.model_dump(exclude_unset=True))
    await db.commit()
    return _org_out(org)


@router.delete(
    "/orgs/{orgSlug}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Soft-delete an organization (requires owner)",
)
async def delete_org(org_slug: OrgSlug, ctx: Ctx, db: Db, principal: OrgWriter) -> Response:
    org, _ = await service.resolve(db, principal, MemberRole.OWNER, slug=org_slug)
    keys = await service.delete_org(db, org)
    await db.commit()
    await ctx.publish_revoked(kind=CredentialKind.API_KEY, credential_ids=keys)
    return no_content()


@router.get("/orgs/{orgSlug}/members", summary="List members of an organization (requires viewer)")
async def list_org_members(org_slug: OrgSlug, db: Db, principal: OrgReader) -> list[schemas.OrgMember]:
    org, _ = await service.resolve(db, principal, MemberRole.VIEWER, slug=org_slug)
    return [_member_out(m) for m in await service.list_members(db, org)]


@router.post(
    "/orgs/{orgSlug}/members",
    status_code=status.HTTP_201_CREATED,
    summary="Add a member to an organization (requires admin)",
)
async def add_org_member(
    org_slug: OrgSlug, body: schemas.AddMemberRequest, db: Db, principal: OrgWriter
) -> schemas.OrgMember:
    org, role = await service.resolve(db, principal, MemberRole.ADMIN, slug=org_slug)
    member = await service.add_member(db, org, role, body.user_id, MemberRole(body.role))
    await db.commit()
    return _member_out(member)


@router.patch("/orgs/{orgSlug}/members/{userID}", summary="Update a member's role (requires admin)")
async def update_org_member(
    org_slug: OrgSlug,
    user_id: UserID,
    body: schemas.UpdateMemberRequest,
    db: Db,
    principal: OrgWriter,
) -> schemas.OrgMember:
    org, role = await service.resolve(db, principal, MemberRole.ADMIN, slug=org_slug)
    member = await service.update_member(db, org, principal, role, user_id, body.role)
    await db.commit()
    return _member_out(member)


@router.delete(
    "/orgs/{orgSlug}/members/{userID}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (admin required, unless removing self)",
)
async def remove_org_member(
    org_slug: OrgSlug,
    user_id: UserID,
    ctx: Ctx,
    db: Db,
    principal: OrgWriter,
) -> Response:
    org, role = await service.resolve(db, principal, MemberRole.VIEWER, slug=org_slug)
    keys = await service.remove_member(db, org, principal, role, user_id)
    await db.commit()
    if keys:
        await ctx.publish_revoked(kind=CredentialKind.API_KEY, credential_ids=keys)
    return no_content()
