"""Property tests of both frame parsers: whatever a client sends, the answer is the frame or a
precise error event, and whatever is accepted can travel on the bus.

Three properties, each over many generated frames:
1. arbitrary text and arbitrary JSON (any nesting, any code point, any number) never raises
   anything but the protocol's frame error, and that error's event serialises;
2. every accepted frame becomes a bus message that serialises and parses back (the lone
   surrogate that once answered `service.unavailable` could not);
3. every malformed frame of `frame_strategies` gets exactly the code it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from parley_common.session_contract import ClientInputText, InputText, SessionInputEnvelope
from parley_session_gateway import frame_json
from parley_session_gateway.chat.frames import ChatFrameError, ChatMessage, parse_chat_frame
from parley_session_gateway.frame_json import MAX_DEPTH, BadFrame, ClientFrameError, decode_object
from parley_session_gateway.realtime.frames import FrameError, parse_client_frame

from .frame_strategies import MAX_NESTING, Case, chat_cases, kivox_cases

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON text with any code point (lone surrogates and NUL included, as escapes), any number (NaN,
# infinities and huge integers too), and nesting from none to far past the limit. Built as text:
# the deepest values would exhaust `json.dumps` itself.
_any_text = st.text(st.characters(exclude_categories=[]), max_size=30)  # surrogates too (Cs)
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _any_text).map(json.dumps)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4).map(_array)
        | st.lists(st.tuples(_any_text, inner), max_size=4).map(_object)
        | st.tuples(st.integers(1, 2000), inner).map(lambda d: "[" * d[0] + d[1] + "]" * d[0])
    ),
)
_types = st.sampled_from(["input_text", "handshake", "cancel", "message", "token-refresh"]) | _any_text
# A known type with any value in its text field (`text`, `content`) and any other fields.
_typed = st.tuples(
    _types, _json | _any_text.map(json.dumps), st.lists(st.tuples(_any_text, _json), max_size=4)
).map(lambda t: _object([("type", json.dumps(t[0])), ("text", t[1]), ("content", t[1]), *t[2]]))
_frames = st.one_of(_any_text, _json, _typed)


def _nested(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


def _bus_roundtrip(text: str) -> None:
    item = InputText(at=datetime.now(UTC), connection_id="c", text=text)
    wire = SessionInputEnvelope(input=item).model_dump_json().encode()
    assert SessionInputEnvelope.model_validate_json(wire).input == item


@dataclass(frozen=True)
class Parser:
    """One protocol's parser, its frame error, its malformed cases, and the text an accepted frame
    puts on the bus (None for a frame without text)."""

    parse: Callable[[str], BaseModel]
    error: type[ClientFrameError]
    cases: Callable[[], st.SearchStrategy[Case]]
    text: Callable[[Any], str | None]


KIVOX = Parser(
    parse_client_frame, FrameError, kivox_cases, lambda f: f.text if isinstance(f, ClientInputText) else None
)
CHAT = Parser(
    parse_chat_frame, ChatFrameError, chat_cases, lambda f: f.content if isinstance(f, ChatMessage) else None
)
BOTH = pytest.mark.parametrize("parser", [KIVOX, CHAT], ids=["kivox", "chat"])


@BOTH
@FUZZ
@given(text=_frames)
def test_any_text_is_a_frame_or_a_precise_error(parser: Parser, text: str) -> None:
    try:
        frame = parser.parse(text)
    except parser.error as exc:
        exc.event().model_dump_json().encode()  # the event itself can be sent
        return
    frame.model_dump_json().encode()
    if (sent := parser.text(frame)) is not None:
        _bus_roundtrip(sent)


@BOTH
@FUZZ
@given(data=st.data())
def test_each_malformed_frame_gets_its_code(parser: Parser, data: st.DataObject) -> None:
    case = data.draw(parser.cases(), label="case")
    with pytest.raises(parser.error) as caught:
        parser.parse(case.frame)
    assert caught.value.code.code == case.code, (case.shape, case.frame[:200], caught.value.event())


def test_the_strategies_and_the_gateway_agree_on_the_nesting_limit() -> None:
    assert MAX_NESTING == MAX_DEPTH
    inside = json.dumps({"type": "input_text", "text": "hi", "x": _nested(MAX_DEPTH - 2)})
    assert parse_client_frame(inside).type == "input_text"  # the object itself is the first level
    with pytest.raises(FrameError):
        parse_client_frame(json.dumps({"type": "input_text", "text": "hi", "x": _nested(MAX_DEPTH - 1)}))


@pytest.mark.parametrize(
    ("frame", "code", "detail"),
    [
        # The three frames of issue 10, item 7.
        ("[" * 1000 + "]" * 1000, "realtime.invalid_frame", "nested deeper than 32 levels"),
        ('{"type": "input_text", "text": "\\ud800"}', "realtime.invalid_frame", "text: not valid Unicode"),
        ('{"type": "input_text", "text": "a\\u0000b"}', "realtime.invalid_frame", "text: NUL characters"),
        ('{"type": "input_text", "text": "hi", "n": 1e999}', "realtime.invalid_frame", "n: number out of"),
        ('{"type": "cancel", "\\udfff": 1}', "realtime.invalid_frame", "(a key): not valid Unicode"),
        ('{"type": "end", "x": NaN}', "realtime.invalid_json", "not a JSON object"),
    ],
)  # fmt: skip
def test_regressions(frame: str, code: str, detail: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(frame)
    event = caught.value.event()
    assert event.code == code and detail in event.message, event
    with pytest.raises(ChatFrameError) as chat:
        parse_chat_frame(frame.replace("input_text", "message").replace('"text"', '"content"'))
    assert chat.value.event().error.startswith(code), chat.value.event()


def _outcome(decode: Callable[[str], Any], text: str) -> Any:
    try:
        return ("frame", decode(text))
    except BadFrame as exc:
        return ("bad", exc.problem, exc.detail)


_raw_text = st.text(st.characters(exclude_categories=[]), max_size=30)  # written as is, not escaped
_flat = st.lists(
    st.tuples(
        _raw_text,
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _raw_text, st.just([]), st.just({})),
    ),
    max_size=4,
)


@FUZZ
@given(pairs=_flat, ascii_only=st.booleans())
def test_a_plain_frame_skips_the_walk_and_decodes_the_same(
    pairs: list[tuple[str, Any]], ascii_only: bool
) -> None:
    """`decode_object`'s shortcut for a flat frame without escapes (`_plain`) answers exactly what
    the walk answers, whatever the strings hold as written (NUL, lone surrogates, any code point)."""
    text = json.dumps({"type": "input_text", **dict(pairs)}, ensure_ascii=ascii_only)
    fast = _outcome(decode_object, text)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(frame_json, "_plain", lambda text, raw: False)
        walked = _outcome(decode_object, text)
    assert repr(fast) == repr(walked)  # repr: NaN compares unequal to itself
