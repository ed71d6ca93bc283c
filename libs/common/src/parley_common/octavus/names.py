"""Name rules of Octavus definitions (docs 0.0.5 "Naming Conventions") and built-in data types."""

from __future__ import annotations

import re

# Variables (input, resources, variables, trigger input) are UPPERCASE_SNAKE_CASE.
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Triggers, tools, prompts and threads are lowercase-with-dashes.
KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# settings.slug: "URL-safe identifier (lowercase, digits, dashes)".
SLUG = re.compile(r"^[a-z0-9-]+$")
# Custom types (`types:`) are PascalCase.
TYPE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# agent.model: "provider/model-id".
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*/\S+$")
# A reference to a variable, optionally into an object: `TICKET` or `TICKET.ticketId`.
REFERENCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)$")

SCALAR_TYPES = frozenset({"string", "number", "integer", "boolean", "unknown", "file"})
MAIN_THREAD = "main"


def reference_root(value: str) -> str | None:
    """`TICKET` for `TICKET.ticketId`; None when `value` is not shaped like a reference."""
    match = REFERENCE.match(value)
    return match.group(1) if match else None


def type_references(type_name: str) -> str | None:
    """The custom type a `type:` value names (`Product` for `Product[]`), None for built-ins."""
    base = type_name.removesuffix("[]")
    return None if base in SCALAR_TYPES or base == "array" else base


def format_path(parts: tuple[str | int, ...]) -> str:
    """`("handlers", "user-message", 2, "tool")` -> `handlers.user-message[2].tool`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out
