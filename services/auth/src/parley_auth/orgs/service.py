"""Org logic and the role rules: owner > admin > member > viewer, and never an ownerless org.

Callers who are not members of an org get 404 for it (its existence is not revealed); members
whose role is too low get 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.accounts.models import User
from parley_auth.apikeys.models import ApiKey
from parley_auth.orgs.models import Membership, Org
from parley_common.auth_contract import CredentialKind, MemberRole, Principal
from parley_common.errors import Codes, ParleyError
from parley_common.kit.db import flush_unique

ORG_NOT_FOUND = {"resource": "organization"}


def now() -> datetime:
    return datetime.now(UTC)


async def _live_org(db: AsyncSession, *, slug: str | None = None, org_id: UUID | None = None) -> Org | None:
    query = select(Org).where(Org.deleted_at.is_(None))
    if org_id is not None:
        query = query.where(Org.id == org_id)
    elif slug is not None:
        query = query.where(Org.slug == slug)
    else:
        return None
    return await db.scalar(query)


async def _membership(
    db: AsyncSession, org_id: UUID, user_id: UUID, *, lock: bool = False
) -> Membership | None:
    query = select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    return await db.scalar(query.with_for_update() if lock else query)


async def resolve(
    db: AsyncSession,
    principal: Principal,
    min_role: MemberRole,
    *,
    slug: str | None = None,
    org_id: UUID | None = None,
) -> tuple[Org, MemberRole]:
    """The org and the caller's role in it, or 404 (not a member) / 403 (role too low)."""
    if principal.kind is CredentialKind.CLIENT_TOKEN or principal.user_id is None:
        raise ParleyError(Codes.FORBIDDEN, "Client tokens carry no organization role.")
    org = await _live_org(db, slug=slug, org_id=org_id)
    # A key owned by one org never reaches another org, even if its creator could.
    if org is None or (principal.org_id is not None and principal.org_id != org.id):
        raise ParleyError(Codes.NOT_FOUND, params=ORG_NOT_FOUND)
    member = await _membership(db, org.id, principal.user_id)
    if member is None:
        raise ParleyError(Codes.NOT_FOUND, params=ORG_NOT_FOUND)
    role = MemberRole(member.role)
    if not role.at_least(min_role):
        raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": min_role.value})
    return org, role


async def create_org(db: AsyncSession, user_id: UUID, name: str, slug: str, description: str | None) -> Org:
    if await _live_org(db, slug=slug) is not None:
        raise ParleyError(Codes.ORG_SLUG_TAKEN)
    org = Org(name=name, slug=slug, description=description, created_by=user_id, tier="free")
    db.add(org)
    await flush_unique(db, Codes.ORG_SLUG_TAKEN)
    db.add(Membership(org_id=org.id, user_id=user_id, role=MemberRole.OWNER.value))
    await db.flush()
    return org


async def list_orgs(db: AsyncSession, principal: Principal) -> list[Org]:
    assert principal.user_id is not None
    query = (
        select(Org)
        .join(Membership, Membership.org_id == Org.id)
        .where(Membership.user_id == principal.user_id, Org.deleted_at.is_(None))
        .order_by(Org.created_at)
    )
    if principal.org_id is not None:
        query = query.where(Org.id == principal.org_id)
    return list((await db.scalars(query)).all())


async def update_org(db: AsyncSession, org: Org, fields: dict[str, object]) -> Org:
    # `name` is required on an org: an explicit null means "leave it", as for users.
    if fields.get("name") is not None:
        org.name = str(fields["name"])
    if "description" in fields:
        org.description = str(fields["description"]) if fields["description"] is not None else None
    if "avatar_url" in fields:
        org.avatar_url = str(fields["avatar_url"]) if fields["avatar_url"] is not None else None
    org.updated_at = now()
    await db.flush()
    return org


async def delete_org(db: AsyncSession, org: Org) -> list[UUID]:
    """Soft-delete the org; its API keys (and so their client tokens) die with it. Returns their ids."""
    org.deleted_at = now()
    await db.flush()
    return await revoke_org_keys(db, org.id)


async def revoke_org_keys(db: AsyncSession, org_id: UUID, *, created_by: UUID | None = None) -> list[UUID]:
    """Revoke the org's live API keys (only those `created_by` made, when given); returns their ids."""
    query = update(ApiKey).where(ApiKey.owner_org_id == org_id, ApiKey.revoked_at.is_(None))
    if created_by is not None:
        query = query.where(ApiKey.created_by_user_id == created_by)
    revoked = await db.scalars(query.values(revoked_at=now()).returning(ApiKey.id))
    return list(revoked.all())


async def list_members(db: AsyncSession, org: Org) -> list[Membership]:
    query = select(Membership).where(Membership.org_id == org.id).order_by(Membership.created_at)
    return list((await db.scalars(query)).all())


async def add_member(
    db: AsyncSession, org: Org, actor_role: MemberRole, user_id: UUID, role: MemberRole
) -> Membership:
    if not actor_role.at_least(role):
        raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": role.value})
    user = await db.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise ParleyError(Codes.NOT_FOUND, params={"resource": "user"})
    if await _membership(db, org.id, user_id) is not None:
        raise ParleyError(Codes.MEMBER_EXISTS)
    member = Membership(org_id=org.id, user_id=user_id, role=role.value)
    db.add(member)
    await flush_unique(db, Codes.MEMBER_EXISTS)
    return member


async def _owner_count(db: AsyncSession, org_id: UUID) -> int:
    # Lock the owner rows so two concurrent demotions cannot both see "another owner remains".
    owners = await db.scalars(
        select(Membership.user_id)
        .where(Membership.org_id == org_id, Membership.role == MemberRole.OWNER.value)
        .with_for_update()
    )
    return len(owners.all())


async def _target(db: AsyncSession, org: Org, user_id: UUID) -> Membership:
    member = await _membership(db, org.id, user_id, lock=True)
    if member is None:
        raise ParleyError(Codes.NOT_FOUND, params={"resource": "member"})
    return member


async def update_member(
    db: AsyncSession, org: Org, actor: Principal, actor_role: MemberRole, user_id: UUID, role: MemberRole
) -> Membership:
    member = await _target(db, org, user_id)
    current = MemberRole(member.role)
    if user_id != actor.user_id and current.rank > actor_role.rank:
        raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": current.value})
    if not actor_role.at_least(role):
        raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": role.value})
    if current is MemberRole.OWNER and role is not MemberRole.OWNER and await _owner_count(db, org.id) <= 1:
        raise ParleyError(Codes.ORG_LAST_OWNER)
    member.role = role.value
    member.updated_at = now()
    await db.flush()
    return member


async def remove_member(
    db: AsyncSession, org: Org, actor: Principal, actor_role: MemberRole, user_id: UUID
) -> list[UUID]:
    """Remove a member (or let one leave); returns the ids of the org's keys they made, revoked."""
    member = await _target(db, org, user_id)
    current = MemberRole(member.role)
    if user_id != actor.user_id:
        if not actor_role.at_least(MemberRole.ADMIN):
            raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": MemberRole.ADMIN.value})
        if current.rank > actor_role.rank:
            raise ParleyError(Codes.INSUFFICIENT_ROLE, params={"required": current.value})
    if current is MemberRole.OWNER and await _owner_count(db, org.id) <= 1:
        raise ParleyError(Codes.ORG_LAST_OWNER)
    await db.delete(member)
    await db.flush()
    # The org's keys this member made go with them: an org key never outlives its creator's seat.
    return await revoke_org_keys(db, org.id, created_by=user_id)


async def assert_not_last_owner_anywhere(db: AsyncSession, user_id: UUID) -> None:
    """Deleting an account must not leave a live org without an owner."""
    mine = (
        select(Membership.org_id)
        .join(Org, Org.id == Membership.org_id)
        .where(
            Membership.user_id == user_id, Membership.role == MemberRole.OWNER.value, Org.deleted_at.is_(None)
        )
    )
    counts = await db.execute(
        select(Membership.org_id, func.count())
        .where(Membership.org_id.in_(mine), Membership.role == MemberRole.OWNER.value)
        .group_by(Membership.org_id)
    )
    if any(count <= 1 for _, count in counts.all()):
        raise ParleyError(
            Codes.ORG_LAST_OWNER, "You are the last owner of an organization; transfer or delete it first."
        )
