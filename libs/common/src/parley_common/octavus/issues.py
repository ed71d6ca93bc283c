"""Validation findings, and the `{valid, errors, warnings}` body `octavus validate` expects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["error", "warning"]


class Issue(BaseModel):
    """One finding. `path` is dotted with block indices (`handlers.user-message[2].tool`);
    settings and prompts are prefixed `settings.` / `prompts.<name>`; whole-file problems of
    protocol.yaml use `protocol`. `line` is 1-based in the file the path points into."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str
    severity: Severity = "error"
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity}: {where}: {self.message}"


class WireIssue(BaseModel):
    """An entry of `errors`/`warnings` as @octavus/cli 2.0.0 parses it (dist/index.js:146-162)."""

    message: str
    path: str  # the CLI's zod has `path: z.string().optional()`: absent is fine, null is not
    severity: Severity


class ValidationResult(BaseModel):
    """Response body of `POST /api/agents/validate` for @octavus/cli 2.0.0."""

    valid: bool
    errors: list[WireIssue] = Field(default_factory=list)
    warnings: list[WireIssue] = Field(default_factory=list)

    @classmethod
    def from_issues(cls, issues: Iterable[Issue]) -> ValidationResult:
        errors: list[WireIssue] = []
        warnings: list[WireIssue] = []
        for issue in issues:
            # The CLI prints `message (path)` only, so the line travels inside the message.
            message = f"{issue.message} (line {issue.line})" if issue.line else issue.message
            wire = WireIssue(message=message, path=issue.path, severity=issue.severity)
            (errors if issue.severity == "error" else warnings).append(wire)
        return cls(valid=not errors, errors=errors, warnings=warnings)


def has_errors(issues: Iterable[Issue]) -> bool:
    return any(issue.severity == "error" for issue in issues)
