"""Typed input checks (session input, trigger input) and protocol data types as JSON schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley_common.errors import Codes, ParleyError
from parley_common.octavus import InputDef, ToolDef
from parley_common.octavus.models import ArrayType, ObjectType, TypeDef, UnionType

_SCALARS = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


def _matches(data_type: str, value: Any, types: Mapping[str, TypeDef]) -> bool:
    if data_type.endswith("[]"):
        return isinstance(value, list) and all(_matches(data_type[:-2], v, types) for v in value)
    if data_type == "unknown":
        return True
    if data_type == "string":
        return isinstance(value, str)
    if data_type == "boolean":
        return isinstance(value, bool)
    if data_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if data_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if data_type in ("file", "object"):
        return isinstance(value, dict)
    if data_type == "array":
        return isinstance(value, list)
    custom = types.get(data_type)
    if isinstance(custom, ArrayType):
        return isinstance(value, list) and all(_matches(custom.items.type, v, types) for v in value)
    if isinstance(custom, ObjectType):
        if not isinstance(value, dict):
            return False
        for name, prop in custom.root.items():
            if name not in value:
                if not prop.optional:
                    return False
            elif not _matches(prop.type, value[name], types):
                return False
        return True
    if isinstance(custom, UnionType):
        return any(_matches(member, value, types) for member in custom.any_of)
    return True  # an unknown type name is reported by the validator, not at run time


def check_input(
    declared: Mapping[str, InputDef],
    given: Mapping[str, Any] | None,
    types: Mapping[str, TypeDef],
    *,
    what: str,
) -> dict[str, Any]:
    """The input with defaults filled in; 400 `octavus.invalid_input` naming the first problem."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise _invalid(f"{what} `{unknown[0]}` is not declared (declared: {', '.join(declared) or 'none'})")
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        if name not in given or given[name] is None:
            if spec.default is not None:
                out[name] = spec.default
            elif not spec.optional:
                raise _invalid(f"{what} `{name}` ({spec.type}) is required")
            continue
        value = given[name]
        if not _matches(spec.type, value, types):
            raise _invalid(f"{what} `{name}` must be of type {spec.type}, got {type(value).__name__}")
        out[name] = value
    return out


def _invalid(detail: str) -> ParleyError:
    return ParleyError(Codes.OCTAVUS_INVALID_INPUT, params={"detail": detail})


def json_schema(data_type: str, types: Mapping[str, TypeDef], depth: int = 0) -> dict[str, Any]:
    """A JSON schema for a protocol data type (tool parameters for the LLM)."""
    if data_type.endswith("[]"):
        return {"type": "array", "items": json_schema(data_type[:-2], types, depth + 1)}
    if data_type in _SCALARS:
        return {"type": _SCALARS[data_type]}
    custom = types.get(data_type)
    if depth > 5 or custom is None:
        return {"type": "object"} if data_type in ("file", "object") else {}
    if isinstance(custom, ArrayType):
        return {"type": "array", "items": json_schema(custom.items.type, types, depth + 1)}
    if isinstance(custom, UnionType):
        return {"anyOf": [json_schema(m, types, depth + 1) for m in custom.any_of]}
    props: dict[str, Any] = {}
    for name, prop in custom.root.items():
        schema = json_schema(prop.type, types, depth + 1)
        if prop.description:
            schema["description"] = prop.description
        if prop.enum:
            schema["enum"] = prop.enum
        props[name] = schema
    required = [n for n, p in custom.root.items() if not p.optional]
    return {"type": "object", "properties": props, "required": required}


def tool_parameters(tool: ToolDef, types: Mapping[str, TypeDef]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, param in tool.parameters.items():
        schema = json_schema(param.type, types)
        if param.description:
            schema["description"] = param.description
        props[name] = schema
    required = [n for n, p in tool.parameters.items() if not p.optional]
    return {"type": "object", "properties": props, "required": required}
