"""The page-numbered, searchable lists (agents, templates): their query parameters and their query."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Query
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.search import tsquery, tsquery_text

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_PAGE = 10_000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-100, default 20).")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")]
Search = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Full-text search over name and description (every word must match, as a prefix).",
    ),
]


def offset(limit: int, page: int) -> int:
    return (page - 1) * limit


async def search_page(
    db: AsyncSession,
    model: Any,
    *,
    owner_user_id: UUID | None = None,
    owner_org_id: UUID | None = None,
    search: str | None,
    limit: int,
    page: int,
) -> tuple[list[Any], int]:
    """One page of an owner's live rows of `model` and how many there are in all.

    `model` is a table with `deleted_at`, `owner_user_id`, `owner_org_id`, `created_at`, `id` and a
    `search` tsvector. With a search, only matching rows, best match first; newest first otherwise."""
    where: list[ColumnElement[bool]] = [model.deleted_at.is_(None)]
    where.append(
        model.owner_user_id == owner_user_id if owner_user_id else model.owner_org_id == owner_org_id
    )
    order: list[Any] = [model.created_at.desc(), model.id.desc()]
    query_text = tsquery_text(search)
    if query_text is not None:
        query = tsquery(query_text)
        where.append(model.search.op("@@")(query))
        order.insert(0, func.ts_rank(model.search, query).desc())
    total = await db.scalar(select(func.count()).select_from(model).where(*where)) or 0
    rows = await db.scalars(
        select(model).where(*where).order_by(*order).limit(limit).offset(offset(limit, page))
    )
    return list(rows), total
