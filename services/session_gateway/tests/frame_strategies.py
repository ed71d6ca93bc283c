"""Hypothesis strategies of malformed client frames for both socket protocols, each with the error
code the gateway must answer it with.

Used by the parsers' property tests (test_frame_fuzz.py) and, over real sockets, by
tests/e2e/test_socket_fuzz.py. Every case is invalid by construction and names its code; none may
start a turn or end the session. The shapes: text that is not a JSON object, unknown or missing
`type`s, known types with missing or mistyped fields, and otherwise valid frames with a defect
planted anywhere in them (deep nesting, a lone surrogate, a NUL, a number out of range, the
`NaN` / `Infinity` literals), in values and in keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from parley_session_gateway.frame_json import nesting

INVALID_JSON = "realtime.invalid_json"
UNKNOWN_TYPE = "realtime.unknown_type"
INVALID_FRAME = "realtime.invalid_frame"

KIVOX_TYPES = frozenset({"handshake", "input_text", "input_audio", "input_audio_stream", "cancel", "end"})
CHAT_TYPES = frozenset({"message", "token-refresh"})
MAX_NESTING = 32  # what the gateway accepts (parley_session_gateway.frame_json.MAX_DEPTH)


@dataclass(frozen=True)
class Case:
    frame: str
    code: str  # the error code the frame must be answered with
    shape: str  # what is wrong with it (for failure messages)


# ------------------------------------------------------------------------------ JSON building blocks

# Text a WebSocket can carry and the bus can store: no lone surrogates, no NUL.
clean_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text
)


# Any JSON value the gateway accepts as such (well within its nesting limit).
json_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(clean_text, inner, max_size=3),
    max_leaves=8,
).filter(lambda v: nesting(v) <= 6)
# Extra fields next to the known ones (ignored by the gateway when they are clean).
extra_fields = st.dictionaries(clean_text.filter(lambda k: k not in ("type", "id")), json_values, max_size=3)


def _frame(fields: dict[str, Any], extra: dict[str, Any]) -> str:
    return json.dumps({**extra, **fields})


# ------------------------------------------------------------------------------ shapes


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


@st.composite
def not_an_object(draw: st.DrawFn) -> Case:
    """Text that is not JSON, JSON that is not an object, and the non-JSON number literals."""
    kind = draw(st.sampled_from(["text", "value", "literal"]))
    if kind == "text":
        text = draw(clean_text.filter(lambda t: not isinstance(_loads(t), dict)))
        return Case(text, INVALID_JSON, "not JSON / not an object")
    if kind == "value":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return Case(json.dumps(value), INVALID_JSON, "a JSON value that is not an object")
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    return Case(f'{{"type": "input_text", "text": {literal}}}', INVALID_JSON, f"the {literal} literal")


@st.composite
def unknown_type(draw: st.DrawFn, known: frozenset[str]) -> Case:
    extra = draw(extra_fields)
    if draw(st.booleans()):
        return Case(json.dumps(extra), UNKNOWN_TYPE, "no type")
    kind = draw(json_values.filter(lambda v: not (isinstance(v, str) and v in known)))
    return Case(_frame({"type": kind}, extra), UNKNOWN_TYPE, "an unknown type")


def _not_a_string() -> st.SearchStrategy[Any]:
    return json_values.filter(lambda v: not isinstance(v, str))


_blank = st.text(" \t\r\n", max_size=5)


@st.composite
def kivox_missing_or_mistyped(draw: st.DrawFn) -> Case:
    """`input_text` and `handshake` with a field missing, of the wrong type, empty or too long
    (the other Kivox types have no fields, so any shape of them is valid)."""
    extra = draw(extra_fields.map(lambda e: {k: v for k, v in e.items() if k not in ("text", "agent_id")}))
    text_shapes: list[dict[str, Any]] = [{}, {"text": draw(_not_a_string())}, {"text": draw(_blank)}]
    handshake_shapes: list[dict[str, Any]] = [
        {},
        {"agent_id": draw(_not_a_string())},
        {"agent_id": ""},
        {"agent_id": "a" * draw(st.integers(201, 400))},
        {"agent_id": "a1", "channel": draw(_not_a_string().filter(lambda v: v is not None))},
        {"agent_id": "a1", "channel": "c" * draw(st.integers(65, 200))},
    ]
    if draw(st.booleans()):
        fields = {"type": "input_text", **draw(st.sampled_from(text_shapes))}
    else:
        fields = {"type": "handshake", **draw(st.sampled_from(handshake_shapes))}
        extra = {k: v for k, v in extra.items() if k not in ("channel", "render_directive")}
    return Case(_frame(fields, extra), INVALID_FRAME, f"{fields['type']} with a bad field")


@st.composite
def chat_missing_or_mistyped(draw: st.DrawFn) -> Case:
    """`message` with bad `content`, `artifacts` or `id`; `token-refresh` without a string token."""
    extra = draw(
        extra_fields.map(lambda e: {k: v for k, v in e.items() if k not in ("content", "artifacts", "token")})
    )
    not_a_list = draw(_not_a_string().filter(lambda v: not isinstance(v, list) and v is not None))
    not_an_object = draw(_not_a_string().filter(lambda v: not isinstance(v, dict)))
    shapes: list[dict[str, Any]] = [
        {"type": "message"},
        {"type": "message", "content": draw(_not_a_string())},
        {"type": "message", "content": draw(_blank)},
        {"type": "message", "content": "hi", "artifacts": not_a_list},
        {"type": "message", "content": "hi", "artifacts": [not_an_object]},
        {"type": "message", "content": "hi", "id": draw(_not_a_string().filter(lambda v: v is not None))},
        {"type": "token-refresh"},
        {"type": "token-refresh", "token": draw(_not_a_string())},
        {"type": "token-refresh", "token": ""},
    ]
    fields = draw(st.sampled_from(shapes))
    return Case(_frame(fields, extra), INVALID_FRAME, f"{fields['type']} with a bad field")


# A valid frame of each protocol that does nothing a fuzz run cannot undo (no turn, no end).
_KIVOX_BASES = [{"type": "input_text", "text": "hello"}, {"type": "cancel"}, {"type": "input_audio"}]
_CHAT_BASES = [{"type": "message", "content": "hello", "id": "m1"}, {"type": "token-refresh", "token": "t"}]
_MARK = "__defect__"


@st.composite
def planted_defect(draw: st.DrawFn, bases: list[dict[str, Any]]) -> Case:
    """A valid frame with one defect planted in a value or a key, at the top or nested."""
    base = dict(draw(st.sampled_from(bases)))
    defect = draw(st.sampled_from(["deep", "surrogate", "nul", "huge_float", "huge_int"]))
    if defect == "deep":
        n = draw(st.integers(MAX_NESTING + 1, 1500))
        raw = "[" * n + "]" * n
    elif defect == "surrogate":
        raw = json.dumps(draw(st.text(max_size=5)) + chr(draw(st.integers(0xD800, 0xDFFF))))
    elif defect == "nul":
        raw = json.dumps(draw(clean_text) + "\x00" + draw(clean_text))
    elif defect == "huge_float":
        raw = f"{draw(st.sampled_from(['', '-']))}1e{draw(st.integers(309, 100_000))}"
    else:
        raw = "9" * draw(st.integers(101, 1000))
    where = draw(st.sampled_from(["value", "nested", "key", "replace"]))
    if where == "key" and defect in ("surrogate", "nul"):
        # A key holding the defect: {"<defect>": 1}; json.dumps escapes it exactly as in a value.
        text = json.dumps({**base, _MARK: 1}).replace(json.dumps(_MARK), raw)
        return Case(text, INVALID_FRAME, f"{defect} in a key")
    if where == "replace" and len(base) > 1:
        # The defect instead of one of the frame's own fields.
        field = draw(st.sampled_from(sorted(k for k in base if k != "type")))
        base[field] = _MARK
    elif where == "nested":
        base["extra"] = {"a": [1, {"b": _MARK}]}
    else:
        base["extra"] = _MARK
    text = json.dumps(base).replace(json.dumps(_MARK), raw)
    return Case(text, INVALID_FRAME, f"{defect} in a {where} value")


def _cases(
    known: frozenset[str], mistyped: st.SearchStrategy[Case], bases: list[dict[str, Any]]
) -> st.SearchStrategy[Case]:
    """Every shape of malformed frame of one protocol (its types, its field errors, its valid frames)."""
    return st.one_of(not_an_object(), unknown_type(known), mistyped, planted_defect(bases))


def kivox_cases() -> st.SearchStrategy[Case]:
    return _cases(KIVOX_TYPES, kivox_missing_or_mistyped(), _KIVOX_BASES)


def chat_cases() -> st.SearchStrategy[Case]:
    return _cases(CHAT_TYPES, chat_missing_or_mistyped(), _CHAT_BASES)
