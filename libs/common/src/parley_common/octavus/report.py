"""Collecting issues with both their shown path and their YAML location (for the line)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from parley_common.octavus.issues import Issue, Severity
from parley_common.octavus.names import format_path
from parley_common.octavus.source import Loc, Locator


@dataclass(frozen=True)
class Where:
    """A place in protocol.yaml: `path` is shown (blocks by index), `yaml` finds the line
    (blocks by name)."""

    path: Loc
    yaml: Loc

    def at(self, *rest: str | int) -> Where:
        return Where((*self.path, *rest), (*self.yaml, *rest))


def where(*parts: str | int) -> Where:
    return Where(parts, parts)


@dataclass
class Reporter:
    locator: Locator = field(default_factory=Locator)
    issues: list[Issue] = field(default_factory=list)

    def add(self, at: Where, message: str, severity: Severity = "error") -> None:
        self.issues.append(
            Issue(
                path=format_path(at.path), message=message, severity=severity, line=self.locator.line(at.yaml)
            )
        )

    def warn(self, at: Where, message: str) -> None:
        self.add(at, message, "warning")


def suggest(name: str, known: Iterable[str]) -> str:
    """` (did you mean `x`?)` for a near miss, else ``."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.7)
    return f" (did you mean `{match[0]}`?)" if match else ""


def listing(names: Iterable[str]) -> str:
    items = sorted(names)
    return ", ".join(f"`{n}`" for n in items) if items else "none"
