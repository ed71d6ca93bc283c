# One piece (534 lines): one recursive-descent reader of the Kivox .d.ts and its comparison with
# OpenAPI; the grammar's rules call each other throughout.
"""The Kivox REST contract (`specs/kivox-client.d.ts`, an openapi-typescript dump) read back into
paths, operations and component schemas, and compared with an OpenAPI 3.1 document.

The .d.ts is parsed by a small recursive-descent parser of the TypeScript type syntax that
openapi-typescript emits: object types with optional (`?`) members and index signatures, string
literal unions, intersections, arrays and indexed references such as
`components["schemas"]["Agent"]`. `contract_differences(contract, document)` lists, in words, every
place where a client generated from the served document would differ from one generated from the
contract: an operation, its id, parameters, request body schema and required flag, response codes
and schema names; each contract schema's properties, required flags, referenced names and enums.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

REPO = Path(__file__).resolve().parents[2]


def spec_path() -> Path | None:
    """`shared/specs/kivox-client.d.ts` beside the checkout (or beside the worktrees' folder)."""
    for base in (REPO.parent, REPO.parent.parent):
        path = base / "shared" / "specs" / "kivox-client.d.ts"
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------------ the types


@dataclass(frozen=True)
class Ref:
    """`components["schemas"]["X"]` → Ref("components", ("schemas", "X"))."""

    root: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class Prim:
    name: str  # string, number, boolean, unknown, never, ...


@dataclass(frozen=True)
class Literal:
    value: str | float


@dataclass(frozen=True)
class Array:
    item: Type


@dataclass(frozen=True)
class Union_:
    members: tuple[Type, ...]


@dataclass(frozen=True)
class Intersection:
    members: tuple[Type, ...]


@dataclass
class Obj:
    members: dict[str, tuple[Type, bool]] = field(default_factory=dict)  # name -> (type, optional)
    index: Type | None = None  # `[key: string]: T`


Type = Union[Ref, Prim, Literal, Array, Union_, Intersection, Obj]  # noqa: UP007 - a runtime alias


# ----------------------------------------------------------------------------------- the parser

_TOKEN = re.compile(
    r"""\s+|/\*.*?\*/|//[^\n]*|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)"""
    r"""|(?P<id>[A-Za-z_$][\w$]*)|(?P<punct>[{}\[\]():;?|&,<>=.])""",
    re.S,
)


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise SyntaxError(f"unexpected {text[pos : pos + 30]!r}")
            pos = match.end()
            kind = match.lastgroup
            if kind is not None:
                self.tokens.append((kind, match.group(kind)))
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise SyntaxError(f"expected {value!r}, got {token[1]!r} at token {self.i}")
        self.i += 1
        return token

    def interfaces(self) -> dict[str, Obj]:
        """Every top-level `interface NAME { ... }`; anything else is skipped."""
        found: dict[str, Obj] = {}
        while self.peek()[0] != "eof":
            if self.peek() == ("id", "interface") and self.peek(1)[0] == "id" and self.peek(2)[1] == "{":
                self.take()
                name = self.take()[1]
                found[name] = self.object()
            else:
                self.take()
        return found

    def object(self) -> Obj:
        self.take("{")
        obj = Obj()
        while self.peek()[1] != "}":
            if self.peek()[1] in (";", ","):
                self.take()
                continue
            if self.peek()[1] == "[":  # index signature
                self.take("[")
                self.take()
                self.take(":")
                self.type()
                self.take("]")
                self.take(":")
                obj.index = self.type()
                continue
            kind, key = self.take()
            if kind == "str":
                key = key[1:-1]
            optional = self.peek()[1] == "?"
            if optional:
                self.take()
            self.take(":")
            obj.members[key] = (self.type(), optional)
        self.take("}")
        return obj

    def type(self) -> Type:
        if self.peek()[1] == "|":  # a leading `|` of a multi-line union
            self.take()
        members = [self.intersection()]
        while self.peek()[1] == "|":
            self.take()
            members.append(self.intersection())
        return members[0] if len(members) == 1 else Union_(tuple(members))

    def intersection(self) -> Type:
        members = [self.postfix()]
        while self.peek()[1] == "&":
            self.take()
            members.append(self.postfix())
        return members[0] if len(members) == 1 else Intersection(tuple(members))

    def postfix(self) -> Type:
        value = self.primary()
        # `T[]` or `T["key"]`; a `[` starting anything else is the next member's index signature
        # (members are not separated by `;` in the dump).
        while self.peek()[1] == "[":
            if self.peek(1)[1] == "]":
                self.take()
                self.take()
                value = Array(value)
            elif self.peek(1)[0] == "str" and self.peek(2)[1] == "]":
                self.take("[")
                key = self.take()[1].strip('"')
                self.take("]")
                assert isinstance(value, Ref), f"index into {value}"
                value = Ref(value.root, (*value.path, key))
            else:
                break
        return value

    def primary(self) -> Type:
        kind, value = self.peek()
        if value == "{":
            return self.object()
        if value == "(":
            self.take()
            inner = self.type()
            self.take(")")
            return inner
        self.take()
        if kind == "str":
            return Literal(value[1:-1])
        if kind == "num":
            return Literal(float(value))
        if kind == "id":
            if value in ("components", "operations", "paths"):
                return Ref(value, ())
            return Prim(value)
        raise SyntaxError(f"unexpected {value!r} at token {self.i}")


# --------------------------------------------------------------------------------- the contract


@dataclass
class Contract:
    paths: dict[str, dict[str, str]]  # path -> method -> operationId
    operations: dict[str, Obj]
    components: Obj

    def schema(self, name: str) -> Type:
        schemas = self.components.members["schemas"][0]
        assert isinstance(schemas, Obj)
        return schemas.members[name][0]

    @property
    def schema_names(self) -> list[str]:
        schemas = self.components.members["schemas"][0]
        assert isinstance(schemas, Obj)
        return list(schemas.members)

    def resolve(self, value: Type) -> Type:
        """Follow `components["parameters"|"responses"][...]` references (not schema ones)."""
        while isinstance(value, Ref) and value.root == "components" and value.path[0] != "schemas":
            section = self.components.members[value.path[0]][0]
            assert isinstance(section, Obj)
            value = section.members[value.path[1]][0]
        return value


def load_contract(path: Path) -> Contract:
    interfaces = Parser(path.read_text()).interfaces()
    paths: dict[str, dict[str, str]] = {}
    for route, (item, _) in interfaces["paths"].members.items():
        assert isinstance(item, Obj)
        methods = {}
        for method, (op, _) in item.members.items():
            if method != "parameters":
                assert isinstance(op, Ref) and op.root == "operations", (route, method)
                methods[method] = op.path[0]
        paths[route] = methods
    operations = {name: op for name, (op, _) in interfaces["operations"].members.items()}
    assert all(isinstance(op, Obj) for op in operations.values())
    return Contract(paths, operations, interfaces["components"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the comparison

JSON = "application/json"


class Served:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})

    def deref(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return schema


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (an optional pydantic field) → X."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            return {**{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}, **rest[0]}
    return schema


def type_name(value: Type) -> str | None:
    """How a generated client names a schema-typed value: `X`, `X[]`, or None if inline."""
    if isinstance(value, Ref) and value.root == "components" and value.path[:1] == ("schemas",):
        return value.path[1]
    if isinstance(value, Array):
        inner = type_name(value.item)
        return None if inner is None else f"{inner}[]"
    return None


def served_name(schema: dict[str, Any]) -> str | None:
    name = _ref_name(schema)
    if name is not None:
        return name
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        inner = served_name(schema["items"])
        return None if inner is None else f"{inner}[]"
    return None


def enum_values(value: Type) -> list[Any] | None:
    if isinstance(value, Literal):
        return [value.value]
    if isinstance(value, Union_) and all(isinstance(m, Literal) for m in value.members):
        return [m.value for m in value.members]  # type: ignore[union-attr]
    return None


def object_part(value: Type) -> Obj | None:
    """The object members of a type (an intersection's object parts merged)."""
    if isinstance(value, Obj):
        return value
    if isinstance(value, Intersection):
        merged = Obj()
        for member in value.members:
            part = object_part(member)
            if part is not None:
                merged.members.update({k: v for k, v in part.members.items()})
                merged.index = merged.index or part.index
        return merged
    return None


def compare_type(
    contract: Contract,
    served: Served,
    value: Type,
    schema: dict[str, Any],
    where: str,
    *,
    strict: bool = False,
) -> list[str]:
    """Differences a generated client would see between `value` (contract) and `schema` (served).
    `strict`: a request or response body, where `X | null` is not `X` (a property's optional `null`
    is how pydantic writes an optional field, and is let through)."""
    diffs: list[str] = []
    expected = type_name(value)
    if not strict:
        schema = _non_null(schema)
    if expected is not None:
        actual = served_name(schema)
        if actual != expected:
            diffs.append(f"{where}: contract type {expected}, served {actual or 'an inline schema'}")
        return diffs
    enum = enum_values(value)
    if enum is not None:
        actual_enum = served.deref(schema).get("enum")
        if actual_enum is None and "const" in served.deref(schema):
            actual_enum = [served.deref(schema)["const"]]
        if sorted(map(str, actual_enum or [])) != sorted(map(str, enum)):
            diffs.append(f"{where}: contract enum {enum}, served {actual_enum}")
        return diffs
    if isinstance(value, Array):
        target = served.deref(schema)
        if target.get("type") != "array":
            return [f"{where}: contract array, served {target.get('type') or target}"]
        return compare_type(contract, served, value.item, target.get("items", {}), f"{where}[]")
    obj = object_part(value)
    if obj is not None and obj.members:
        diffs += compare_object(contract, served, obj, served.deref(schema), where)
    return diffs


def compare_object(
    contract: Contract, served: Served, obj: Obj, schema: dict[str, Any], where: str
) -> list[str]:
    diffs: list[str] = []
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    for name, (value, optional) in obj.members.items():
        if name not in properties:
            diffs.append(f"{where}.{name}: missing")
            continue
        if (name in required) == optional:
            want = "optional" if optional else "required"
            diffs.append(
                f"{where}.{name}: contract {want}, served {'required' if name in required else 'optional'}"
            )
        diffs += compare_type(contract, served, value, properties[name], f"{where}.{name}")
    if obj.index is None:
        diffs += [
            f"{where}.{name}: not in the contract" for name in sorted(set(properties) - set(obj.members))
        ]
    return diffs


def _parameters(contract: Contract, op: Obj) -> set[tuple[str, str, bool]]:
    """(in, name, required) of an operation's parameters."""
    result: set[tuple[str, str, bool]] = set()
    params = op.members.get("parameters")
    if params is None:
        return result
    section_obj = params[0]
    assert isinstance(section_obj, Obj)
    for location, (group, group_optional) in section_obj.members.items():
        group = contract.resolve(group)
        assert isinstance(group, Obj)
        for name, (_, optional) in group.members.items():
            result.add((location, name, not (optional or group_optional)))
    return result


def _content_type(contract: Contract, holder: Type) -> Type | None:
    """The `application/json` type of a request body or response, or None without content."""
    holder = contract.resolve(holder)
    assert isinstance(holder, Obj)
    content = holder.members.get("content")
    if content is None:
        return None
    inner = content[0]
    assert isinstance(inner, Obj)
    return inner.members[JSON][0]


def contract_differences(contract: Contract, document: dict[str, Any]) -> list[str]:
    served = Served(document)
    diffs: list[str] = []
    for route, methods in contract.paths.items():
        item = document.get("paths", {}).get(route)
        if item is None:
            diffs.append(f"{route}: path missing")
            continue
        for method, op_id in methods.items():
            where = f"{method.upper()} {route}"
            operation = item.get(method)
            if operation is None:
                diffs.append(f"{where}: operation missing")
                continue
            if operation.get("operationId") != op_id:
                diffs.append(f"{where}: operationId {operation.get('operationId')!r}, contract {op_id!r}")
            op = contract.operations[op_id]
            want = {(loc, name): req for loc, name, req in _parameters(contract, op)}
            have = {(p["in"], p["name"]): bool(p.get("required")) for p in operation.get("parameters", [])}
            for loc, name in sorted(want.keys() - have.keys()):
                diffs.append(f"{where}: {loc} parameter {name} missing")
            for loc, name in sorted(have.keys() - want.keys()):
                diffs.append(f"{where}: {loc} parameter {name} not in the contract")
            for key in sorted(want.keys() & have.keys()):
                if want[key] != have[key]:
                    diffs.append(
                        f"{where}: {key[0]} parameter {key[1]} required={have[key]}, contract {want[key]}"
                    )
            diffs += _request_body(contract, served, op, operation, where)
            diffs += _responses(contract, served, op, operation, where)
    for name in contract.schema_names:
        if name not in served.schemas:
            diffs.append(f"schema {name}: missing")
            continue
        value = contract.schema(name)
        schema = served.schemas[name]
        enum = enum_values(value)
        if enum is not None:
            if sorted(map(str, schema.get("enum", []))) != sorted(map(str, enum)):
                diffs.append(f"schema {name}: contract enum {enum}, served {schema.get('enum')}")
            continue
        obj = object_part(value)
        if obj is not None:
            diffs += compare_object(contract, served, obj, schema, f"schema {name}")
    return diffs


def _request_body(
    contract: Contract, served: Served, op: Obj, operation: dict[str, Any], where: str
) -> list[str]:
    body = op.members.get("requestBody")
    actual = operation.get("requestBody")
    if body is None:
        return [f"{where}: a request body the contract does not have"] if actual else []
    if actual is None:
        return [f"{where}: request body missing"]
    diffs = []
    value, optional = body
    if bool(actual.get("required")) == optional:
        diffs.append(
            f"{where}: request body required={bool(actual.get('required'))}, contract {not optional}"
        )
    expected = _content_type(contract, value)
    schema = actual.get("content", {}).get(JSON, {}).get("schema", {})
    if expected is not None:
        diffs += compare_type(contract, served, expected, schema, f"{where} request body", strict=True)
    return diffs


def _responses(
    contract: Contract, served: Served, op: Obj, operation: dict[str, Any], where: str
) -> list[str]:
    responses = op.members["responses"][0]
    assert isinstance(responses, Obj)
    actual: dict[str, Any] = operation.get("responses", {})
    diffs = []
    want_codes = {code.split(".")[0] for code in responses.members}
    if set(actual) != want_codes:
        diffs.append(f"{where}: response codes {sorted(actual)}, contract {sorted(want_codes)}")
    for code, (value, _) in responses.members.items():
        code = code.split(".")[0]
        if code not in actual:
            continue
        expected = _content_type(contract, value)
        content = actual[code].get("content", {})
        if expected is None:
            if content:
                diffs.append(f"{where} {code}: served a body the contract does not have")
            continue
        schema = content.get(JSON, {}).get("schema")
        if schema is None:
            diffs.append(f"{where} {code}: no {JSON} body")
            continue
        diffs += compare_type(contract, served, expected, schema, f"{where} {code}", strict=True)
    return diffs


# Parley's additions to contract operations and schemas: optional, so a client generated from the
# contract neither sends nor misses them, and each is documented. Nothing else may differ.
EXTENSIONS: dict[str, str] = {
    "GET /users/me/templates: query parameter search not in the contract": (
        "search filters templates as it does agents (docs/catalog.md)"
    ),
    "GET /orgs/{orgSlug}/templates: query parameter search not in the contract": (
        "search filters templates as it does agents (docs/catalog.md)"
    ),
    "schema CreateAPIKeyRequest.org_slug: not in the contract": (
        "an optional field that makes an org-scoped key (docs/auth.md)"
    ),
    "schema UpdateEmailRequest.current_password: not in the contract": (
        "an optional field: an API key changes the login email only with the password (docs/auth.md)"
    ),
    "schema AgentConfig.voice: not in the contract": (
        "an optional object: the agent's speech engines and turn policy (docs/voice.md#agent-config)"
    ),
    "schema AgentLintDiagnostics.diagnostics: not in the contract": (
        "the `errors` findings as objects with node ids, next to `errors` (docs/catalog.md)"
    ),
}
