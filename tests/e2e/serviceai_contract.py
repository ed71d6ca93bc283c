# One piece (562 lines): one reader of the ServiceAi excerpt (its lost indentation rebuilt by grammar)
# and its comparison with OpenAPI; the reader's rules call each other throughout.
"""The ServiceAi contract excerpt (`specs/serviceai-openapi-excerpt.yaml`, API 1.2.1) read back into
OpenAPI paths and component schemas, and compared with an OpenAPI 3.1 document.

The excerpt is YAML whose indentation was lost (almost every line starts in column 0) and whose
gaps are `# ...` lines, so a YAML parser cannot read it. What is there is read by its grammar
instead: OpenAPI's fixed keys for paths, operations, parameters, bodies and responses, and a
JSON-schema reader that knows which keyword takes what. Where flat text is ambiguous, the reader
decides as the schema language does: a keyword a schema already has, or one its type cannot take
(`properties` under `type: string`), belongs to an enclosing schema, where it is a property name;
`required` belongs to the innermost schema whose properties it names; a `- ` item starts the next
member of the enclosing `anyOf`/`allOf`. `parse_excerpt` also checks that every line of the regions
it reads was consumed.

`contract_differences(contract, document)` lists every place where a client generated from the
served document would differ from one generated from the excerpt, for its paths: the operation,
parameters and their required flags, request body presence, required flag and schema, response
codes, media types and schemas (types, enums, properties, required fields, items, constraints,
`additionalProperties`, `anyOf`/`allOf`), and the components the excerpt defines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete")
# Keys that end a folded (`>-`) description in the paths region.
_AFTER_FOLDED = ("tags", "content", "parameters", "requestBody", "responses", "summary")
_SCALAR_KEYWORDS = {
    "type", "format", "description", "title", "example", "pattern", "default", "$ref", "const",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems",
}  # fmt: skip
_LIST_KEYWORDS = {"enum", "required", "type"}
_SCHEMA_LISTS = {"anyOf", "allOf", "oneOf"}
_IGNORED = {"title", "description", "example", "default", "examples"}


def spec_path() -> Path | None:
    for base in (REPO.parent, REPO.parent.parent):
        path = base / "shared" / "specs" / "serviceai-openapi-excerpt.yaml"
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------------ tokens


@dataclass
class Token:
    line: int
    key: str | None  # None for a `- scalar` item
    value: Any  # the inline value; None for a block (`key:` alone)
    item: bool = False  # the line started with `- `
    block: str | None = None  # for `key:` alone: "list" when items follow, else "map"
    folded: bool = False  # `key: >-` (its text lines are skipped)


_KEY = re.compile(r"""^(?P<key>'[^']*'|"[^"]*"|[^\s'"][^:]*?):(?:\s+(?P<value>.*))?$""")


def _scalar(text: str) -> Any:
    if text.startswith("*"):
        return text  # an alias of an anchor the excerpt elides
    return yaml.safe_load(text)


def tokenize(lines: list[tuple[int, str]]) -> list[Token]:
    tokens: list[Token] = []
    skipping = False
    for number, raw in lines:
        text = raw.strip()
        if not text:
            continue
        if skipping:
            head = text.split(":", 1)[0]
            if not (head in _AFTER_FOLDED and text.startswith(head + ":")):
                continue
            skipping = False
        item = text.startswith("- ") or text == "-"
        body = text[2:].strip() if item else text
        match = _KEY.match(body)
        if match is None:
            if not item:
                raise ValueError(f"line {number}: cannot read {text!r}")
            tokens.append(Token(number, None, _scalar(body), item=True))
            continue
        key = str(_scalar(match["key"])) if match["key"][0] in "'\"" else match["key"]
        value = match["value"]
        if value in (">-", ">", "|", "|-"):
            tokens.append(Token(number, key, None, item=item, folded=True))
            skipping = True
        elif value is None or value == "":
            tokens.append(Token(number, key, None, item=item))
        else:
            tokens.append(Token(number, key, _scalar(value), item=item))
    for i, token in enumerate(tokens):
        if token.key is not None and token.value is None and not token.folded:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            token.block = "list" if nxt is not None and nxt.item else "map"
    return tokens


# ------------------------------------------------------------------------------------ schemas


@dataclass
class _Schema:
    node: dict[str, Any]


@dataclass
class _Props:
    node: dict[str, Any]


@dataclass
class _Members:
    node: list[Any]


def _typed_not_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind is not None and kind != "object"


class SchemaReader:
    """Reads one schema from `tokens[i]` on; `stop(token)` ends it (the enclosing grammar's keys)."""

    def __init__(self, tokens: list[Token], stop: Any) -> None:
        self.tokens, self.stop = tokens, stop

    def read(self, i: int) -> tuple[dict[str, Any], int]:
        root: dict[str, Any] = {}
        stack: list[_Schema | _Props | _Members] = [_Schema(root)]
        while i < len(self.tokens):
            token = self.tokens[i]
            if self.stop(token):
                break
            while stack and not self._accepts(stack[-1], token):
                stack.pop()
            if not stack:
                break
            i = self._apply(stack, token, i)
        return root, i

    def _list(self, i: int) -> tuple[list[Any], int]:
        values = []
        while i < len(self.tokens) and self.tokens[i].item and self.tokens[i].key is None:
            values.append(self.tokens[i].value)
            i += 1
        return values, i

    def _accepts(self, frame: _Schema | _Props | _Members, token: Token) -> bool:
        key = token.key
        if isinstance(frame, _Members):
            return token.item
        if token.item:
            return False
        if isinstance(frame, _Props):
            return key is not None and (token.block == "map" or token.value == {})
        schema = frame.node
        if key is None or key in schema:
            return False
        if key in ("properties", "additionalProperties"):
            return not _typed_not_object(schema)
        if key == "required" and token.block == "list":
            names, _ = self._list(self.tokens.index(token) + 1)
            return all(n in schema.get("properties", {}) for n in names)
        if key in _SCHEMA_LISTS or key in _LIST_KEYWORDS:
            return token.block == "list" or (key == "type" and token.value is not None)
        if key == "items":
            return True
        return key in _SCALAR_KEYWORDS and token.value is not None

    def _apply(self, stack: list[_Schema | _Props | _Members], token: Token, i: int) -> int:
        frame = stack[-1]
        key = token.key
        if isinstance(frame, _Members):
            member: dict[str, Any] = {}
            frame.node.append(member)
            stack.append(_Schema(member))
            if token.key is None:
                raise ValueError(f"line {token.line}: a scalar where a schema was expected")
            # The item's first key belongs to the new member.
            self.tokens[i] = Token(token.line, token.key, token.value, block=token.block, folded=token.folded)
            return i
        assert key is not None
        if isinstance(frame, _Props):
            child: dict[str, Any] = {}
            frame.node[key] = child
            if token.value != {}:
                stack.append(_Schema(child))
            return i + 1
        schema = frame.node
        if token.block == "list" and key in _LIST_KEYWORDS:
            schema[key], end = self._list(i + 1)
            return end
        if token.block == "list" and key in _SCHEMA_LISTS:
            schema[key] = []
            stack.append(_Members(schema[key]))
            return i + 1
        if key == "properties":
            schema[key] = {}
            stack.append(_Props(schema[key]))
            return i + 1
        if key in ("items", "additionalProperties") and token.value is None:
            schema[key] = {}
            stack.append(_Schema(schema[key]))
            return i + 1
        schema[key] = token.value
        return i + 1


# ------------------------------------------------------------------------------------ the excerpt


@dataclass
class Contract:
    paths: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    version_fragment: dict[str, Any] = field(default_factory=dict)
    consumed: int = 0  # lines read


def _response_code(token: Token) -> bool:
    return token.key is not None and (re.fullmatch(r"\d{3}", token.key) is not None or token.key == "default")


def _path_level(token: Token) -> bool:
    return token.key is not None and (
        token.key.startswith("/") or token.key in METHODS or token.key == "webhooks"
    )


def _after_schema(token: Token) -> bool:
    """What may follow a schema in the paths region and is never part of it."""
    return _path_level(token) or _response_code(token) or token.key in ("responses", "requestBody", "content")


def _expect(tokens: list[Token], i: int, key: str) -> int:
    if i >= len(tokens) or tokens[i].key != key:
        found = tokens[i].key if i < len(tokens) else "the end"
        raise ValueError(
            f"expected {key}: at line {tokens[i].line if i < len(tokens) else '?'}, found {found}"
        )
    return i + 1


def _content(tokens: list[Token], i: int) -> tuple[dict[str, Any], int]:
    """`content:` → {media type: schema}."""
    i = _expect(tokens, i, "content")
    media: dict[str, Any] = {}
    while i < len(tokens) and (key := tokens[i].key) is not None and "/" in key and not key.startswith("/"):
        name = key
        i = _expect(tokens, i + 1, "schema")
        if tokens[i - 1].value == {}:
            media[name] = {}
            continue
        if tokens[i - 1].value is not None:
            raise ValueError(f"line {tokens[i - 1].line}: unexpected inline schema")
        media[name], i = SchemaReader(tokens, lambda t: _after_schema(t) or _media_key(t)).read(i)
    return media, i


def _media_key(token: Token) -> bool:
    return token.key is not None and "/" in token.key and not token.key.startswith("/")


def _operation(tokens: list[Token], i: int) -> tuple[dict[str, Any], int]:
    op: dict[str, Any] = {"parameters": [], "responses": {}}
    while i < len(tokens) and not _path_level(tokens[i]):
        token = tokens[i]
        if token.key in ("summary", "description"):
            i += 1
        elif token.key == "tags":
            i += 1
            while i < len(tokens) and tokens[i].item and tokens[i].key is None:
                i += 1
        elif token.key == "parameters":
            i += 1
            while i < len(tokens) and tokens[i].item:
                if tokens[i].key is None:  # `- *ref_2`: an alias of an elided anchor
                    op["parameters"].append({"$alias": tokens[i].value})
                    i += 1
                    continue
                param: dict[str, Any] = {}
                tokens[i] = Token(tokens[i].line, tokens[i].key, tokens[i].value, block=tokens[i].block)
                while (
                    i < len(tokens)
                    and not tokens[i].item
                    and tokens[i].key in ("name", "in", "required", "schema", "description")
                ):
                    if tokens[i].key == "schema":
                        param["schema"], i = SchemaReader(
                            tokens,
                            lambda t: _after_schema(t) or t.item or t.key in ("description", "in", "name"),
                        ).read(i + 1)
                    else:
                        param[tokens[i].key] = tokens[i].value  # type: ignore[index]
                        i += 1
                op["parameters"].append(param)
        elif token.key == "requestBody":
            i += 1
            body: dict[str, Any] = {"required": False}
            if tokens[i].key == "required":
                body["required"] = bool(tokens[i].value)
                i += 1
            body["content"], i = _content(tokens, i)
            op["requestBody"] = body
        elif token.key == "responses":
            i += 1
            while i < len(tokens) and _response_code(tokens[i]):
                code = tokens[i].key
                assert code is not None
                i = _expect(tokens, i + 1, "description")
                response: dict[str, Any] = {}
                if i < len(tokens) and tokens[i].key == "content":
                    response["content"], i = _content(tokens, i)
                op["responses"][code] = response
        else:
            raise ValueError(f"line {token.line}: unexpected {token.key!r} in an operation")
    return op, i


def parse_excerpt(path: Path) -> Contract:
    lines = path.read_text().splitlines()
    numbered = list(enumerate(lines, start=1))
    contract = Contract()

    def region(start: int, end: int) -> list[tuple[int, str]]:
        return [(n, t) for n, t in numbered[start:end] if t.strip() and not t.strip().startswith("#")]

    # The component schemas of the chatty routes: from ChattyToolDefinition to `parameters: {}`.
    first = next(i for i, t in enumerate(lines) if t.strip() == "ChattyToolDefinition:")
    last = next(i for i, t in enumerate(lines) if i > first and t.strip() == "parameters: {}")
    tokens = tokenize(region(first, last))
    i = 0
    while i < len(tokens):
        name = tokens[i].key
        if name is None or not name[:1].isupper():
            raise ValueError(f"line {tokens[i].line}: expected a component name")
        contract.schemas[name], i = SchemaReader(
            tokens, lambda t: t.key is not None and t.key[:1].isupper() and t.block == "map"
        ).read(i + 1)
    contract.consumed += len(tokens)

    # The paths of the chatty routes: from the first of them to `webhooks:`.
    first = next(i for i, t in enumerate(lines) if t.strip() == "/api/chatty-voice/tools:")
    last = next(i for i, t in enumerate(lines) if t.strip().startswith("webhooks:"))
    tokens = tokenize(region(first, last))
    i = 0
    while i < len(tokens):
        route = tokens[i].key
        assert route is not None and route.startswith("/"), tokens[i]
        i += 1
        methods: dict[str, dict[str, Any]] = {}
        while i < len(tokens) and tokens[i].key in METHODS:
            method = tokens[i].key
            assert method is not None
            methods[method], i = _operation(tokens, i + 1)
        contract.paths[route] = methods
    contract.consumed += len(tokens)

    # `/api/version`: its body's fragment, the `properties` right after the info block.
    start = next(i for i, t in enumerate(lines) if t.strip() == "apiVersion:") - 1
    tokens = tokenize(region(start, start + 7))
    contract.version_fragment, end = SchemaReader(tokens, lambda t: False).read(0)
    assert end == len(tokens)
    return contract


# ------------------------------------------------------------------------------------ comparing


class Served:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})

    def deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 20:
            schema = self.schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
            seen += 1
        return schema


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def compare_schema(served: Served, want: Any, have: Any, where: str) -> list[str]:
    """Differences between a contract schema and a served one (titles, descriptions and examples
    aside; `{}` and `true` are the same schema)."""
    if want in ({}, True):
        return []
    if not isinstance(want, dict):
        return [f"{where}: unreadable contract schema {want!r}"]
    name = _ref_name(want)
    if name is not None:
        actual = _ref_name(have) if isinstance(have, dict) else None
        return (
            []
            if actual == name
            else [f"{where}: contract type {name}, served {actual or 'an inline schema'}"]
        )
    have = served.deref(have)
    if have in ({}, True) or not isinstance(have, dict):
        return [f"{where}: served an unconstrained schema"]
    diffs: list[str] = []
    for key, value in want.items():
        if key in _IGNORED or key in ("properties", "required", "items", "additionalProperties", "enum"):
            continue
        if key in _SCHEMA_LISTS:
            members = have.get(key)
            if not isinstance(members, list) or len(members) != len(value):
                diffs.append(f"{where}: contract {key} of {len(value)}, served {members!r:.80}")
                continue
            for n, (w, h) in enumerate(zip(value, members, strict=True)):
                diffs += compare_schema(served, w, h, f"{where}.{key}[{n}]")
        elif key == "type":
            if have.get("type") != value:
                diffs.append(f"{where}: contract type {value}, served {have.get('type')}")
        elif have.get(key) != value:
            diffs.append(f"{where}: contract {key} {value!r}, served {have.get(key)!r}")
    enum = want.get("enum")
    if enum is not None and sorted(map(str, enum)) != sorted(map(str, _enum(have) or [])):
        diffs.append(f"{where}: contract enum {enum}, served {_enum(have)}")
    if "items" in want:
        diffs += compare_schema(served, want["items"], have.get("items", {}), f"{where}[]")
    if "additionalProperties" in want:
        w, h = want["additionalProperties"], have.get("additionalProperties")
        if isinstance(w, bool):
            if h != w and not (w is True and h == {}):
                diffs.append(f"{where}: contract additionalProperties {w}, served {h}")
        else:
            diffs += compare_schema(served, w, h if h is not None else {}, f"{where}{{*}}")
    properties = want.get("properties")
    if properties is not None:
        actual = have.get("properties", {})
        for prop, schema in properties.items():
            if prop not in actual:
                diffs.append(f"{where}.{prop}: missing")
            else:
                diffs += compare_schema(served, schema, actual[prop], f"{where}.{prop}")
        diffs += [f"{where}.{p}: not in the contract" for p in sorted(set(actual) - set(properties))]
    wanted, served_required = sorted(want.get("required", [])), sorted(have.get("required", []))
    if wanted != served_required:
        diffs.append(f"{where}: required {served_required}, contract {wanted}")
    return diffs


def contract_differences(contract: Contract, document: dict[str, Any]) -> list[str]:
    served = Served(document)
    diffs: list[str] = []
    for route, methods in contract.paths.items():
        item = document.get("paths", {}).get(route)
        if item is None:
            diffs.append(f"{route}: path missing")
            continue
        for method, want in methods.items():
            where = f"{method.upper()} {route}"
            op = item.get(method)
            if op is None:
                diffs.append(f"{where}: operation missing")
                continue
            diffs += _parameters(want, op, where)
            diffs += _body(served, want, op, where)
            diffs += _responses(served, want, op, where)
    for name, schema in contract.schemas.items():
        if name not in served.schemas:
            diffs.append(f"schema {name}: missing")
        else:
            diffs += compare_schema(served, schema, served.schemas[name], f"schema {name}")
    version = document.get("paths", {}).get("/api/version", {}).get("get")
    if version is None:
        diffs.append("/api/version: path missing")
    else:
        schema = version.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
        have = served.deref(schema.get("schema", {}))
        for prop, want in contract.version_fragment.get("properties", {}).items():
            if prop not in have.get("properties", {}):
                diffs.append(f"GET /api/version 200.{prop}: missing")
            else:
                diffs += compare_schema(
                    served, want, have["properties"][prop], f"GET /api/version 200.{prop}"
                )
    return diffs


def _parameters(want: dict[str, Any], op: dict[str, Any], where: str) -> list[str]:
    diffs = []
    named = {(p["in"], p["name"].lower()): bool(p.get("required")) for p in want["parameters"] if "name" in p}
    have = {(p["in"], p["name"].lower()): bool(p.get("required")) for p in op.get("parameters", [])}
    for key, required in sorted(named.items()):
        if key not in have:
            diffs.append(f"{where}: {key[0]} parameter {key[1]} missing")
        elif have[key] != required:
            diffs.append(f"{where}: {key[0]} parameter {key[1]} required={have[key]}, contract {required}")
    # Served parameters the contract does not name are reported (its `*ref_2` alias is elided).
    for key in sorted(set(have) - set(named)):
        diffs.append(f"{where}: {key[0]} parameter {key[1]} not in the contract")
    return diffs


def _body(served: Served, want: dict[str, Any], op: dict[str, Any], where: str) -> list[str]:
    body, actual = want.get("requestBody"), op.get("requestBody")
    if body is None:
        return [f"{where}: a request body the contract does not have"] if actual else []
    if actual is None:
        return [f"{where}: request body missing"]
    diffs = []
    if bool(actual.get("required")) != body["required"]:
        diffs.append(
            f"{where}: request body required={bool(actual.get('required'))}, contract {body['required']}"
        )
    for media, schema in body["content"].items():
        have = actual.get("content", {}).get(media)
        if have is None:
            diffs.append(f"{where} request body: no {media}")
        else:
            diffs += compare_schema(served, schema, have.get("schema", {}), f"{where} request body")
    return diffs


def _responses(served: Served, want: dict[str, Any], op: dict[str, Any], where: str) -> list[str]:
    diffs = []
    actual: dict[str, Any] = op.get("responses", {})
    wanted = set(want["responses"])
    # Every Parley operation documents the error envelope as `default`.
    extra = set(actual) - wanted - {"default"}
    missing = wanted - set(actual)
    if missing or extra:
        diffs.append(f"{where}: response codes {sorted(actual)}, contract {sorted(wanted)}")
    for code, response in want["responses"].items():
        if code not in actual:
            continue
        content = actual[code].get("content", {})
        for media, schema in response.get("content", {}).items():
            if media not in content:
                diffs.append(f"{where} {code}: no {media} body")
                continue
            diffs += compare_schema(served, schema, content[media].get("schema", {}), f"{where} {code}")
        for media in sorted(set(content) - set(response.get("content", {}))):
            diffs.append(f"{where} {code}: a {media} body the contract does not have")
    return diffs
