"""Query parameters shared by the page-numbered lists (agents, templates)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

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
