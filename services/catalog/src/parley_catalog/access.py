"""Who may do what with something owned by a user or an organization.

- User-owned: only that user (with a personal credential: an org's API key never reaches a user's
  own resources). Everyone else gets 404, so existence is never revealed.
- Org-owned: auth decides over the bus (`auth.authorize`): non-members get 404, members below the
  required role get 403 `auth.insufficient_role`.
- What belongs to an agent (its tests, runs, conversations, tools) is reached through the agent's
  owner, and is 404 once the agent is deleted.

Routes load what they act on through `load_owned` (an agent, a template) or `owning_agent` (the
agent of a test, a run, a conversation, a tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.db import Base
from parley_common.auth_contract import MemberRole, Principal
from parley_common.errors import Codes, ParleyError


def not_found(resource: str) -> ParleyError:
    return ParleyError(Codes.NOT_FOUND, params={"resource": resource})


def personal_owner(principal: Principal) -> UUID:
    """The user whose personal resources (`/users/me/...`) this credential manages. Org keys never
    get here: those routes' `Authenticator(org_keys=False)` refuses them."""
    if principal.user_id is None or principal.org_id is not None:  # a route wired without it
        raise ParleyError(Codes.FORBIDDEN, "An organization's API key cannot manage personal resources.")
    return principal.user_id


async def org_by_slug(ctx: CatalogContext, principal: Principal, slug: str, min_role: MemberRole) -> UUID:
    reply = await ctx.auth.authorize(principal, min_role, org_slug=slug)
    assert reply.org_id is not None
    return reply.org_id


async def check_owner(
    ctx: CatalogContext,
    principal: Principal,
    *,
    owner_user_id: UUID | None,
    owner_org_id: UUID | None,
    min_role: MemberRole,
    resource: str,
) -> MemberRole:
    """The caller's role on the owner of a resource, or 404 / 403 as the module doc says."""
    if owner_user_id is not None:
        if principal.org_id is None and principal.user_id == owner_user_id:
            return MemberRole.OWNER
        raise not_found(resource)
    if owner_org_id is None or (principal.org_id is not None and principal.org_id != owner_org_id):
        raise not_found(resource)
    try:
        reply = await ctx.auth.authorize(principal, min_role, org_id=owner_org_id)
    except ParleyError as exc:
        if exc.code in (Codes.NOT_FOUND, Codes.FORBIDDEN):
            raise not_found(resource) from exc
        raise
    assert reply.role is not None
    return reply.role


class Owned(Protocol):
    """A row owned by a user or an organization."""

    owner_user_id: UUID | None
    owner_org_id: UUID | None


Row = TypeVar("Row", bound=Base)


class OwnerIds(Protocol):
    """Who owns a new agent or template: a user or an organization, the other one `None` (an
    `owner.Owner` of a route, an Octavus project)."""

    @property
    def user_id(self) -> UUID | None: ...

    @property
    def org_id(self) -> UUID | None: ...


async def live_row(db: AsyncSession, model: type[Row], row_id: UUID, *, lock: bool = False) -> Row | None:
    """The row of `model` with `row_id` unless soft-deleted (`deleted_at` set); `lock`: locked for
    the transaction and read afresh."""
    table: Any = model  # a table with `id` and `deleted_at`
    query = select(model).where(table.id == row_id, table.deleted_at.is_(None))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return await db.scalar(query)


async def load_owned(
    ctx: CatalogContext,
    db: AsyncSession,
    principal: Principal,
    model: type[Row],
    row_id: UUID,
    min_role: MemberRole,
    resource: str,
    *,
    lock: bool = False,
) -> Row:
    """The live row (an agent, a template) if the caller holds `min_role` on its owner, else 404 /
    403; `lock`: locked for the transaction."""
    row = await live_row(db, model, row_id)
    if row is None:
        raise not_found(resource)
    await check_owner_of(ctx, principal, cast(Owned, row), min_role, resource)
    if lock:
        # Checked first, locked after: the bus round trip to auth is not made while holding the lock.
        row = await live_row(db, model, row_id, lock=True)
        if row is None:
            raise not_found(resource)
    return row


@dataclass(frozen=True)
class OwnedLoader(Generic[Row]):
    """`load_owned` for one table: `load_for(ctx, db, principal, row_id, min_role, lock=False)`."""

    model: type[Row]
    resource: str

    async def __call__(
        self,
        ctx: CatalogContext,
        db: AsyncSession,
        principal: Principal,
        row_id: UUID,
        min_role: MemberRole,
        *,
        lock: bool = False,
    ) -> Row:
        return await load_owned(ctx, db, principal, self.model, row_id, min_role, self.resource, lock=lock)


async def owning_agent(
    ctx: CatalogContext,
    db: AsyncSession,
    principal: Principal,
    agent_id: UUID | None,
    min_role: MemberRole,
    resource: str,
) -> Agent:
    """The live agent something belongs to (a test, a run, a conversation, a tool) if the caller
    holds `min_role` on its owner; else 404 as `resource` (403 below the role)."""
    agent = await live_row(db, Agent, agent_id) if agent_id is not None else None
    if agent is None:
        raise not_found(resource)
    await check_owner_of(ctx, principal, agent, min_role, resource)
    return agent


async def check_owner_of(
    ctx: CatalogContext, principal: Principal, owned: Owned, min_role: MemberRole, resource: str
) -> MemberRole:
    """`check_owner` on the owner of `owned` (an agent, a template)."""
    return await check_owner(
        ctx,
        principal,
        owner_user_id=owned.owner_user_id,
        owner_org_id=owned.owner_org_id,
        min_role=min_role,
        resource=resource,
    )


async def can_view(
    ctx: CatalogContext, principal: Principal, *, owner_user_id: UUID | None, owner_org_id: UUID | None
) -> bool:
    try:
        await check_owner(
            ctx,
            principal,
            owner_user_id=owner_user_id,
            owner_org_id=owner_org_id,
            min_role=MemberRole.VIEWER,
            resource="agent",
        )
    except ParleyError as exc:
        if exc.code in (Codes.NOT_FOUND, Codes.INSUFFICIENT_ROLE):
            return False
        raise
    return True
