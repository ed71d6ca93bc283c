"""Free-form JSON from callers (node data, tool schemas, tool arguments) that PostgreSQL and HTTP
can carry: every string and key valid Unicode.

JSON may spell lone UTF-16 surrogates (`"\\ud800"`); Python keeps them in `str`, but they cannot be
encoded as UTF-8, so `jsonb` (and any outgoing request) would fail on them. Fields typed `str` are
checked by pydantic already; this covers the `Any`-typed ones.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator

T = TypeVar("T")
MAX_DEPTH = 64


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth + 1)
            _check(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)


def ensure_clean(value: T) -> T:
    """`value` unchanged if every string in it is valid Unicode; `ValueError` (a 422) otherwise."""
    if hasattr(value, "model_dump"):
        _check(value.model_dump(mode="python"), 0)
    else:
        _check(value, 0)
    return value


CleanJSON = Annotated[dict[str, Any], AfterValidator(ensure_clean)]
