"""Clock helpers (UTC, timezone-aware)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def created_now() -> dict[str, datetime]:
    """`created_at` and `updated_at` of a row created now: the same instant."""
    now = utcnow()
    return {"created_at": now, "updated_at": now}
