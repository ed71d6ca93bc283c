"""Decoding a client's JSON text frame into something every later step can carry.

`json.loads` alone accepts frames the rest of the path cannot handle:

- nesting deep enough to raise `RecursionError` (`"[" * 1000 + "]" * 1000`, 2 KB), here or
  wherever the value is walked or serialised again;
- lone UTF-16 surrogates (`"\\ud800"`): valid JSON escapes, but not Unicode, so the bus message
  made from the frame cannot be encoded as UTF-8;
- NUL characters, which PostgreSQL text (transcripts) cannot hold;
- numbers out of any useful range (`1e999` becomes `inf`, which JSON cannot express again) and
  the `NaN` / `Infinity` literals, which are not JSON at all.

Both socket protocols decode with `decode_object` and turn a `BadFrame` into their own error
event, so each of these is answered precisely and the session lives on.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel

from parley_common.errors import ErrorCode

MAX_DEPTH = 32  # objects and arrays inside each other: Kivox frames are flat, chat artifacts reach 18
MAX_INT_DIGITS = 100  # longer integers are "out of range" (Python refuses > 4300 digits anyway)

Problem = Literal["json", "depth", "value"]


class ClientFrameError(Exception):
    """A client frame refused with a code: each protocol answers it with its own error event
    (`event()`), and the session lives on."""

    code: ErrorCode

    def event(self) -> BaseModel:
        raise NotImplementedError


class BadFrame(Exception):
    """`json`: not a JSON object; `depth`: nested too deep; `value`: a string or number that cannot
    be carried (`detail` names where). `frame` is the decoded object when decoding got that far."""

    def __init__(self, problem: Problem, detail: str = "", frame: dict[str, Any] | None = None) -> None:
        self.problem = problem
        self.detail = detail
        self.frame = frame
        super().__init__(f"{problem}: {detail}")


def _not_json(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def _int(digits: str) -> float | int:
    # `inf` marks it for the walk below, which reports it with its place in the frame.
    return math.inf if len(digits.lstrip("-")) > MAX_INT_DIGITS else int(digits)


def carriable(text: str) -> bool:
    """A string that can travel on the bus and be stored: valid Unicode, no NUL."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_str(value: Any, max_length: int | None = None) -> str | None:
    """`value` when it is a carriable string (safe to echo back) of at most `max_length`, else None."""
    if isinstance(value, str) and (max_length is None or len(value) <= max_length) and carriable(value):
        return value
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL characters are not allowed"
    if not carriable(text):
        return "not valid Unicode (a lone surrogate)"
    return None


def _where(path: str, key: str | int) -> str:
    part = str(key) if isinstance(key, int) else (clean_str(key, 40) or "?")
    return f"{path}.{part}" if path else part


# One decoder for every frame (`json.loads` with hooks builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_int=_int)


def decode_object(text: str) -> dict[str, Any]:
    """The frame as a JSON object whose every string and number can be carried, else `BadFrame`."""
    try:
        raw = _DECODER.decode(text)
    except RecursionError as exc:
        raise BadFrame("depth", f"nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadFrame("json") from exc
    if type(raw) is dict and _plain(text, raw):
        return raw
    value_problem = _walk(raw)
    if not isinstance(raw, dict):
        raise BadFrame("json")
    if value_problem is not None:
        raise BadFrame("value", value_problem, raw)
    return raw


def _plain(text: str, raw: dict[str, Any]) -> bool:
    """True when `_walk` has nothing to find in `raw`, told without walking it (a Kivox frame such as
    `input_text`): a flat object decoded from a carriable text without a backslash. Without escapes
    every key and string is a piece of the text as written, so carriable too (a NUL or a lone
    surrogate only gets in through an escape, or is in the text); no nesting; and no number out of
    range (`_int` makes a long integer `inf`, a float; a float is left to the walk)."""
    if "\\" in text or not carriable(text):
        return False
    for value in raw.values():
        kind = type(value)
        if not (kind is str or kind is int or kind is bool or value is None):
            return False
    return True


def nesting(value: Any) -> int:
    """How deep objects and arrays nest in a decoded JSON value (0 for a scalar). Recursive: for
    values `decode_object` has already bounded by `MAX_DEPTH`."""
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    return 0


def _walk(root: Any) -> str | None:
    """Raise `BadFrame("depth")` on nesting over `MAX_DEPTH`; return the first uncarriable value
    (`"<path>: <problem>"`), None when there is none. Iterative: no recursion to exhaust."""
    found: str | None = None
    stack: list[tuple[Any, str, int]] = [(root, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise BadFrame("depth", f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                where = _where(path, key)
                if found is None and isinstance(key, str) and (problem := _string_problem(key)):
                    found = f"{where} (a key): {problem}"
                stack.append((item, where, depth + 1))
        elif found is not None:
            continue
        elif isinstance(value, str):
            if problem := _string_problem(value):
                found = f"{path or 'frame'}: {problem}"
        elif isinstance(value, float) and not math.isfinite(value):
            found = f"{path or 'frame'}: number out of range"
    return found
