"""Assembly of streamed tool-call argument fragments into parsed arguments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from parley_runtime.llm.errors import protocol_error
from parley_runtime.llm.types import ToolCallEnd


@dataclass
class ToolCallBuffer:
    id: str
    name: str
    parts: list[str] = field(default_factory=list)

    def end(self, provider: str) -> ToolCallEnd:
        return ToolCallEnd(self.id, self.name, parse_arguments(provider, self.name, "".join(self.parts)))


def parse_arguments(provider: str, tool: str, raw: str) -> dict[str, Any]:
    """Empty arguments mean `{}` (sent for parameterless functions by some servers); anything
    else must be a JSON object. A model that produced broken JSON fails the turn with a precise
    `llm.protocol_error` rather than handing a tool half an argument list."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise protocol_error(provider, f"arguments of tool call {tool!r} are not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise protocol_error(provider, f"arguments of tool call {tool!r} are not a JSON object")
    return value
