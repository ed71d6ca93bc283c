"""Rows to the response schemas of the API (and to the other records built from a row)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)
D = TypeVar("D")


def from_row(schema: type[S], row: object, **given: Any) -> S:
    """`schema` with each field taken from the row's attribute of the same name (validated: JSON
    columns become their models, stored strings their enums), except the fields `given` here:
    those the row stores in another form (masked secrets, a nested object, a mapped value)."""
    return schema.model_validate(_values(schema.model_fields, row, given))


def record_from_row(record: type[D], row: object, **given: Any) -> D:
    """`from_row` for a dataclass `record` (not validated: the row's values as they are)."""
    return record(**_values([f.name for f in dataclasses.fields(record)], row, given))  # type: ignore[arg-type]


def _values(names: Any, row: object, given: dict[str, Any]) -> dict[str, Any]:
    return {name: given[name] if name in given else getattr(row, name) for name in names}
