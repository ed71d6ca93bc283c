"""The page-numbered, searchable lists (agents, templates): their query parameters and their query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.search import tsquery, tsquery_text

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_PAGE = 10_000
P = TypeVar("P", bound=BaseModel)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-100, default 20).")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")]
Search = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Full-text search over name and description (every word must match, as a prefix).",
    ),
]


@dataclass
class ListQuery:
    """`?limit=&page=&search=` of a page-numbered list (a FastAPI dependency: `Depends()`)."""

    limit: Limit = DEFAULT_LIMIT
    page: Page = 1
    search: Search = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


async def search_page(
    db: AsyncSession,
    model: Any,
    owned: ColumnElement[bool],
    query: ListQuery,
    page: type[P],
    to_schema: Callable[[Any], BaseModel],
) -> P:
    """One `page` (`items`, `total`, `limit`, `page`) of the live rows of `model` that `owned`
    selects, each item `to_schema` of its row.

    `model` is a table with `deleted_at`, `created_at`, `id` and a `search` tsvector. With a
    search, only matching rows, best match first; newest first otherwise."""
    where: list[ColumnElement[bool]] = [model.deleted_at.is_(None), owned]
    order: list[Any] = [model.created_at.desc(), model.id.desc()]
    query_text = tsquery_text(query.search)
    if query_text is not None:
        ts = tsquery(query_text)
        where.append(model.search.op("@@")(ts))
        order.insert(0, func.ts_rank(model.search, ts).desc())
    total = await db.scalar(select(func.count()).select_from(model).where(*where)) or 0
    rows = await db.scalars(
        select(model).where(*where).order_by(*order).limit(query.limit).offset(query.offset)
    )
    return page(items=[to_schema(row) for row in rows], total=total, limit=query.limit, page=query.page)
