"""Turn a search box string into a PostgreSQL text search query, safely.

Words are taken as letters and digits only (no tsquery operator can get through) and each must
match as a prefix, so "supp bot" finds "Support bot" while the user is still typing.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, func, literal_column

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_WORDS = 16


def tsquery_text(search: str | None) -> str | None:
    """`None` when the string holds no word (then the list is not filtered)."""
    words = [w.lower() for w in _WORD.findall(search or "")][:MAX_WORDS]
    if not words:
        return None
    return " & ".join(f"{w}:*" for w in words)


def tsquery(text: str) -> ColumnElement[str]:
    return func.to_tsquery(literal_column("'simple'::regconfig"), text)
