"""Schema phase: each section and each block is validated on its own, so one mistake does not
hide the others and every issue gets a precise path. Valid pieces are kept for the
cross-reference phase."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from parley_common.octavus.blocks import BLOCK_KINDS, Block, block_kind
from parley_common.octavus.models import (
    DATA_TYPE_PATTERN,
    TOP_LEVEL_KEYS,
    TYPE_KINDS,
    AgentConfig,
    AgentSettings,
    InputDef,
    Protocol,
    ResourceDef,
    ToolDef,
    TriggerDef,
    TypeDef,
    VariableDef,
    type_kind,
)
from parley_common.octavus.names import SLUG
from parley_common.octavus.report import Reporter, Where, suggest, where

M = TypeVar("M", bound=BaseModel)

# Octavus keys from docs newer than 0.0.5 that Parley does not run: named, so the error says so
# instead of just "unknown key".
UNSUPPORTED = {
    "skills": "Octavus skills",
    "mcpServers": "MCP servers",
    "anthropic": "provider-specific options",
    "imageModel": "agentic image generation (use a generate-image block)",
    "webSearch": "built-in web search",
    "cache": "prompt caching options",
    "uses": "calling worker agents",
}

PATTERNS = {
    SLUG.pattern: "must be lowercase letters, digits and dashes",
    DATA_TYPE_PATTERN: "must be a built-in type, a custom type, or either with `[]`",
}


def _vocabulary() -> set[str]:
    words = set(TOP_LEVEL_KEYS)
    models: list[type[BaseModel]] = [AgentConfig, AgentSettings, InputDef, ResourceDef, ToolDef, TriggerDef]
    models += [VariableDef, *BLOCK_KINDS.values()]
    for model in models:
        for name, info in model.model_fields.items():
            words.add(info.alias or name)
    return words


VOCABULARY = _vocabulary()


def _message(error: Any) -> str:
    kind, loc, msg = error["type"], error["loc"], error["msg"]
    key = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        if key in UNSUPPORTED:
            return f"unknown key `{key}`: {UNSUPPORTED[key]} are not supported by Parley"
        return f"unknown key `{key}`{suggest(key, VOCABULARY)}"
    if kind == "missing":
        return f"missing required key `{key}`"
    if kind == "string_pattern_mismatch":
        rule = PATTERNS.get(error.get("ctx", {}).get("pattern", ""), "has an invalid form")
        return f"{rule} (got {error['input']!r})"
    msg = str(msg).removeprefix("Value error, ").replace("Input should be", "must be", 1)
    if kind in ("literal_error", "enum"):
        msg += f" (got {error['input']!r})"
    return msg


def check_model(model: type[M], data: Any, at: Where, report: Reporter) -> M | None:
    """The validated model, or None; every error is reported. When only some keys are wrong,
    the rest is still returned (validated without them) so cross-references can be checked."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    for error in errors:
        loc = tuple(part for part in error["loc"] if part != "root")  # RootModel wrapper
        report.add(at.at(*loc), _message(error))
    bad = {error["loc"][0] for error in errors if error["loc"]}
    if not isinstance(data, dict) or any(e["type"] == "missing" or not e["loc"] for e in errors):
        return None
    try:
        return model.model_validate({k: v for k, v in data.items() if k not in bad})
    except ValidationError:
        return None


def _mapping(data: Any, at: Where, report: Reporter, what: str) -> dict[Any, Any] | None:
    if data is None:
        return {}
    if not isinstance(data, dict):
        report.add(at, f"`{at.path[-1]}` must be a mapping of {what}")
        return None
    return data


def _entries(
    data: Any, model: type[M], at: Where, report: Reporter, what: str, broken: set[str]
) -> dict[str, M]:
    out: dict[str, M] = {}
    for name, raw in (_mapping(data, at, report, what) or {}).items():
        before = len(report.issues)
        checked = check_model(model, {} if raw is None and model is TriggerDef else raw, at.at(name), report)
        if checked is not None:
            out[str(name)] = checked
        if len(report.issues) > before:  # failed, or kept only in part
            broken.add(str(name))
    return out


def check_block(raw: Any, at: Where, report: Reporter) -> Block | None:
    if not isinstance(raw, dict):
        report.add(at, "a block must be a mapping with a `block` kind and its settings")
        return None
    kind = block_kind(raw)
    if kind is None:
        report.add(at, f"missing required key `block` (one of {', '.join(BLOCK_KINDS)})")
        return None
    model = BLOCK_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        key = "block" if "block" in raw else "type"
        report.add(at.at(key), f"unknown block kind `{kind}`{suggest(str(kind), BLOCK_KINDS)}")
        return None
    return check_model(model, raw, at, report)


@dataclass
class BlockSite:
    """A block at its place in a handler or in `steps` (None when it failed the schema)."""

    at: Where
    name: str
    index: int
    block: Block | None


@dataclass
class Parsed:
    protocol: Protocol
    handlers: dict[str, list[BlockSite]] = field(default_factory=dict)
    steps: list[BlockSite] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # top-level keys present in the file
    # Declared names whose definition failed the schema (wholly or in part): they exist, so uses
    # of them are not reported again as "unknown", nor checked against a half-read definition.
    broken: dict[str, set[str]] = field(default_factory=dict)


def _blocks(data: Any, at: Where, report: Reporter) -> list[BlockSite]:
    sites: list[BlockSite] = []
    for index, (name, raw) in enumerate((_mapping(data, at, report, "block names to blocks") or {}).items()):
        site_at = Where((*at.path, index), (*at.yaml, name))
        sites.append(BlockSite(site_at, str(name), index, check_block(raw, site_at, report)))
    return sites


def parse_protocol(data: dict[str, Any], report: Reporter) -> Parsed:
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            if key in UNSUPPORTED:
                report.add(
                    where(key), f"unknown section `{key}`: {UNSUPPORTED[key]} are not supported by Parley"
                )
            else:
                report.add(where(key), f"unknown section `{key}`{suggest(str(key), TOP_LEVEL_KEYS)}")
    broken: dict[str, set[str]] = {}
    sections: dict[str, Any] = {}
    for section, model, what in (
        ("input", InputDef, "input names to definitions"),
        ("resources", ResourceDef, "resource names to definitions"),
        ("triggers", TriggerDef, "trigger names to definitions"),
        ("variables", VariableDef, "variable names to definitions"),
        ("tools", ToolDef, "tool names to definitions"),
    ):
        broken[section] = set()
        sections[section] = _entries(data.get(section), model, where(section), report, what, broken[section])
    types: dict[str, TypeDef] = {}
    broken["types"] = set()
    for name, raw in (_mapping(data.get("types"), where("types"), report, "type names") or {}).items():
        checked = check_model(TYPE_KINDS[type_kind(raw)], raw, where("types", name), report)
        if checked is not None:
            types[str(name)] = checked
        else:
            broken["types"].add(str(name))
    sections["types"] = types
    if data.get("agent") is not None:
        sections["agent"] = check_model(AgentConfig, data["agent"], where("agent"), report)
    parsed = Parsed(Protocol.model_construct(**sections), present={str(k) for k in data}, broken=broken)
    handlers = _mapping(data.get("handlers"), where("handlers"), report, "trigger names to blocks") or {}
    for trigger, raw in handlers.items():
        parsed.handlers[str(trigger)] = _blocks(raw, where("handlers", trigger), report)
    parsed.steps = _blocks(data.get("steps"), where("steps"), report)
    output = data.get("output")
    if output is not None and not isinstance(output, str):
        report.add(where("output"), "`output` must be the name of a variable")
        output = None
    valid_blocks = {
        t: {s.name: s.block for s in sites if s.block is not None} for t, sites in parsed.handlers.items()
    }
    parsed.protocol = parsed.protocol.model_copy(
        update={
            "handlers": valid_blocks,
            "steps": {s.name: s.block for s in parsed.steps if s.block is not None},
            "output": output,
        }
    )
    return parsed
