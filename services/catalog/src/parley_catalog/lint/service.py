"""Lint with the database: the pure rules plus "does the TRANSFER target agent exist?"."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agents.models import Agent
from parley_catalog.lint.rules import Diagnostic, lint
from parley_common.blueprint import Blueprint


async def lint_blueprint(
    db: AsyncSession, blueprint: Blueprint, *, owner_user_id: UUID | None, owner_org_id: UUID | None
) -> list[Diagnostic]:
    """Every problem of `blueprint` for an agent of this owner.

    A transfer target must be a live-or-draft (not deleted) agent of the same owner: another
    tenant's agent reads as non-existent, as it does everywhere else.
    """
    result = lint(blueprint)
    targets: dict[str, UUID] = {}
    for transfer in result.transfers:
        try:
            targets[transfer.agent_id] = UUID(transfer.agent_id)
        except ValueError:
            continue
    existing: set[UUID] = set()
    if targets:
        query = select(Agent.id).where(Agent.id.in_(set(targets.values())), Agent.deleted_at.is_(None))
        if owner_user_id is not None:
            query = query.where(Agent.owner_user_id == owner_user_id)
        else:
            query = query.where(Agent.owner_org_id == owner_org_id)
        existing = set((await db.scalars(query)).all())
    for transfer in result.transfers:
        target = targets.get(transfer.agent_id)
        if target is None or target not in existing:
            result.diagnostics.append(
                Diagnostic(
                    "node.unknown_agent",
                    f"data.agent_id: transfer to agent {transfer.agent_id!r}, which does not exist",
                    entry=transfer.entry,
                    node_id=transfer.node_id,
                )
            )
    return result.diagnostics
