"""Validate an Octavus agent definition: YAML syntax, schema, then cross-references."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from parley_common.octavus.checks import Checker
from parley_common.octavus.issues import Issue, has_errors
from parley_common.octavus.models import AgentBundle, AgentDefinition, AgentFormat, AgentSettings, Protocol
from parley_common.octavus.names import KEBAB
from parley_common.octavus.report import Reporter, Where
from parley_common.octavus.schema import check_model, parse_protocol
from parley_common.octavus.source import load_protocol

MAX_PROMPT_BYTES = 256 * 1024


class DefinitionError(ValueError):
    """Raised by `load_definition` when the definition has errors; carries every issue."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        first = next((i for i in issues if i.severity == "error"), None)
        super().__init__(str(first) if first else "invalid agent definition")


def _settings(settings_json: str | Mapping[str, Any]) -> tuple[AgentSettings | None, list[Issue]]:
    if isinstance(settings_json, str):
        try:
            data: Any = json.loads(settings_json)
        except json.JSONDecodeError as exc:
            return None, [Issue(path="settings", message=f"invalid JSON: {exc.msg}", line=exc.lineno)]
    else:
        data = dict(settings_json)
    if not isinstance(data, dict):
        return None, [Issue(path="settings", message="settings.json must be a JSON object")]
    report = Reporter()
    settings = check_model(AgentSettings, data, Where(("settings",), ()), report)
    issues = [
        i.model_copy(
            update={"message": i.message + " (docs 0.0.5 say `generation`; Octavus 2.0.0 uses `worker`)"}
        )
        if i.path == "settings.format" and isinstance(data, dict) and data.get("format") == "generation"
        else i
        for i in report.issues
    ]
    return settings, issues


def _prompts(prompts: Mapping[str, str]) -> list[Issue]:
    issues: list[Issue] = []
    for name, content in prompts.items():
        if len(content.encode()) > MAX_PROMPT_BYTES:
            issues.append(Issue(path=f"prompts.{name}", message=f"prompt exceeds {MAX_PROMPT_BYTES} bytes"))
        if not KEBAB.match(name):
            issues.append(
                Issue(path=f"prompts.{name}", message=f"prompt names are lowercase-with-dashes: `{name}`",
                      severity="warning")
            )  # fmt: skip
    return issues


def _check(
    protocol_yaml: str, settings_json: str | Mapping[str, Any], prompts: Mapping[str, str]
) -> tuple[list[Issue], AgentSettings | None, Protocol | None]:
    settings, issues = _settings(settings_json)
    issues += _prompts(prompts)
    data, locator, yaml_issues = load_protocol(protocol_yaml)
    issues += yaml_issues
    if data is None:
        return issues, settings, None
    report = Reporter(locator)
    parsed = parse_protocol(data, report)
    fmt: AgentFormat = settings.format if settings else ("worker" if "steps" in data else "interactive")
    Checker(parsed, fmt, dict(prompts), report).run()
    return issues + report.issues, settings, parsed.protocol


def validate_definition(
    protocol_yaml: str, settings_json: str | Mapping[str, Any], prompts: Mapping[str, str]
) -> list[Issue]:
    """Every problem found in the definition: errors (it cannot run) and warnings (it runs, but
    probably not as meant). An empty list means the definition is clean."""
    return _check(protocol_yaml, settings_json, prompts)[0]


def validate_agent(definition: AgentDefinition) -> list[Issue]:
    """`validate_definition` for the body the CLI sends."""
    return validate_definition(definition.protocol, definition.settings.model_dump(), definition.prompt_map())


def load_definition(
    protocol_yaml: str, settings_json: str | Mapping[str, Any], prompts: Mapping[str, str]
) -> tuple[AgentBundle, list[Issue]]:
    """The typed definition for the runtime, and its warnings. Raises DefinitionError on errors."""
    issues, settings, protocol = _check(protocol_yaml, settings_json, prompts)
    if has_errors(issues) or settings is None or protocol is None:
        raise DefinitionError(issues)
    # Re-validate the whole document so the runtime gets a fully validated (not constructed) model.
    full = Protocol.model_validate(load_protocol(protocol_yaml)[0])
    bundle = AgentBundle(
        settings=settings, protocol=full, prompts=dict(prompts), protocol_source=protocol_yaml
    )
    return bundle, issues
