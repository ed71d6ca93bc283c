"""Reading protocol.yaml safely, keeping each key's line for issue reports.

PyYAML `safe_load` builds the data; the composed node tree gives line numbers and reveals
duplicate keys (which `safe_load` silently resolves to the last one, losing e.g. a handler
block). Alias expansion is capped so a "billion laughs" document cannot exhaust the validator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from parley_common.octavus.issues import Issue
from parley_common.octavus.names import format_path

MAX_SOURCE_BYTES = 512 * 1024
MAX_NODES = 50_000

Loc = tuple[str | int, ...]


class _TooLarge(Exception):
    pass


@dataclass
class Locator:
    """Maps a YAML path (mapping keys and list indices) to the 1-based line of its node."""

    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        # The deepest known ancestor, so a missing key points at its parent.
        for end in range(len(loc), -1, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None


def _walk(node: yaml.Node, loc: Loc, locator: Locator, issues: list[Issue], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            child = (*loc, key)
            if key in seen:
                issues.append(
                    Issue(
                        path=format_path(child),
                        line=key_node.start_mark.line + 1,
                        message=f"duplicate key `{key}`: YAML keeps only the last one",
                    )
                )
            seen.add(key)
            locator.lines.setdefault(child, key_node.start_mark.line + 1)
            _walk(value_node, child, locator, issues, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            locator.lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, locator, issues, budget)


def load_protocol(source: str) -> tuple[Any, Locator, list[Issue]]:
    """Parse protocol.yaml. Returns (data or None, locator, issues); data is None on failure."""
    locator = Locator()
    if len(source.encode()) > MAX_SOURCE_BYTES:
        return (
            None,
            locator,
            [Issue(path="protocol", message=f"protocol.yaml exceeds {MAX_SOURCE_BYTES} bytes")],
        )
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        return (
            None,
            locator,
            [
                Issue(
                    path="protocol",
                    message=f"YAML syntax error: {reason}",
                    line=mark.line + 1 if mark else None,
                )
            ],
        )
    except yaml.YAMLError as exc:
        return None, locator, [Issue(path="protocol", message=f"YAML syntax error: {exc}")]
    if root is None:
        return None, locator, [Issue(path="protocol", message="protocol.yaml is empty")]
    issues: list[Issue] = []
    try:
        _walk(root, (), locator, issues, [MAX_NODES])
    except _TooLarge:
        return (
            None,
            locator,
            [
                Issue(
                    path="protocol",
                    message=f"protocol.yaml expands to more than {MAX_NODES} nodes (aliases?)",
                )
            ],
        )
    data = yaml.safe_load(source)  # composes again; cheap next to validation, and never fails here
    if not isinstance(data, dict):
        issues.append(Issue(path="protocol", message="protocol.yaml must be a mapping of sections", line=1))
        return None, locator, issues
    return data, locator, issues
