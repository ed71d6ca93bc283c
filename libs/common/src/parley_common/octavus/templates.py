"""Octavus prompt templates: Markdown with `{{VARIABLE}}` placeholders, nothing more.

Octavus substitutes `{{NAME}}` (and, in docs 0.0.5, `{{NAME.field}}` into a tool result); a
missing value renders as an empty string. There are no tags, filters or expressions, and `{%`,
`{#` are ordinary Markdown text. Jinja2 (parley_common.templating) would reject or reinterpret
such text, so prompts are scanned and rendered here with a plain placeholder scanner instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parley_common.octavus.names import REFERENCE

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_MAX_OUTPUT = 200_000


@dataclass(frozen=True)
class Placeholder:
    raw: str  # the text between the braces, stripped
    line: int  # 1-based
    name: str | None  # root variable name; None when `raw` is not a variable reference
    fields: tuple[str, ...] = ()


def placeholders(source: str) -> list[Placeholder]:
    """Every `{{...}}` in `source`, in order."""
    found: list[Placeholder] = []
    for match in _PLACEHOLDER.finditer(source):
        raw = match.group(1).strip()
        line = source.count("\n", 0, match.start()) + 1
        ref = REFERENCE.match(raw)
        if ref:
            fields = tuple(part for part in ref.group(2).split(".") if part)
            found.append(Placeholder(raw, line, ref.group(1), fields))
        else:
            found.append(Placeholder(raw, line, None))
    return found


def _lookup(values: Mapping[str, Any], name: str, fields: tuple[str, ...]) -> Any:
    value: Any = values.get(name)
    for field in fields:
        value = value.get(field) if isinstance(value, Mapping) else None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)  # objects interpolate as JSON


def render_prompt(source: str, values: Mapping[str, Any]) -> str:
    """Substitute placeholders; unknown variables render empty, non-references stay as text."""

    def substitute(match: re.Match[str]) -> str:
        raw = match.group(1).strip()
        ref = REFERENCE.match(raw)
        if not ref:
            return match.group(0)
        fields = tuple(part for part in ref.group(2).split(".") if part)
        return _text(_lookup(values, ref.group(1), fields))

    return _PLACEHOLDER.sub(substitute, source)[:_MAX_OUTPUT]
