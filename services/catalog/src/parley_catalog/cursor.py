"""Cursor-paginated lists (conversations, messages, test runs): `?after=&limit=`, where `after` is
an opaque keyset cursor, the sort key of the last item of a page, base64url-encoded JSON.

Keyset (not offset) pagination: rows arriving while a client pages never shift or repeat items.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ValidationError
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.pagination import DEFAULT_LIMIT, Limit
from parley_common.errors import Codes, ParleyError

K = TypeVar("K", bound=BaseModel)
T = TypeVar("T")

After = Annotated[
    str | None,
    Query(max_length=512, description="Opaque cursor returned in the previous response's `next_cursor`."),
]


@dataclass
class CursorQuery:
    """`?after=&limit=` of a cursor-paginated list (a FastAPI dependency: `Depends()`)."""

    after: After = None
    limit: Limit = DEFAULT_LIMIT


CursorPage = Annotated[CursorQuery, Depends()]


def encode(key: BaseModel) -> str:
    return base64.urlsafe_b64encode(key.model_dump_json().encode()).decode().rstrip("=")


def decode(raw: str, model: type[K]) -> K:
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return model.model_validate(json.loads(data))
    except (ValueError, binascii.Error, ValidationError, UnicodeDecodeError, RecursionError) as exc:
        raise ParleyError(Codes.INVALID_CURSOR) from exc


async def page(
    db: AsyncSession, query: Select[T], limit: int, key: Callable[[T], BaseModel]
) -> tuple[list[T], str | None]:
    """Up to `limit` rows of `query` (filtered past the cursor and ordered by the key already),
    and the cursor of the next page: `None` when there is none."""
    rows = list((await db.scalars(query.limit(limit + 1))).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(key(rows[-1]))
