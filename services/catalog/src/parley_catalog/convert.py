"""Rows to the response schemas of the API."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)


def from_row(schema: type[S], row: object, **given: Any) -> S:
    """`schema` with each field taken from the row's attribute of the same name (validated: JSON
    columns become their models, stored strings their enums), except the fields `given` here:
    those the row stores in another form (masked secrets, a nested object, a mapped value)."""
    values = {name: given[name] if name in given else getattr(row, name) for name in schema.model_fields}
    return schema.model_validate(values)
