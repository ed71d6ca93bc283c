"""Client frame validation and the input rate limit, without a socket."""

from __future__ import annotations

import json

import pytest

from parley_common.session_contract import ClientHandshake, ClientInputText, ServerTick
from parley_common.token_bucket import TokenBucket
from parley_session_gateway.realtime.connection import tick_json
from parley_session_gateway.realtime.frames import FrameError, parse_client_frame


def test_valid_frames_parse_to_their_models() -> None:
    hello = parse_client_frame(json.dumps({"type": "handshake", "agent_id": "a1", "channel": "web-voice"}))
    assert isinstance(hello, ClientHandshake) and (hello.agent_id, hello.channel) == ("a1", "web-voice")
    text = parse_client_frame(json.dumps({"type": "input_text", "text": "hi", "extra": 1}))
    assert isinstance(text, ClientInputText) and text.text == "hi"
    for kind in ("input_audio", "input_audio_stream", "cancel", "end"):
        assert parse_client_frame(json.dumps({"type": kind})).type == kind


# By the code each is answered with: the frames, each with what its message must contain.
PROBLEMS: dict[str, list[tuple[str, str]]] = {
    "realtime.invalid_json": [("{", ""), ('"text"', ""), ("[]", "")],
    "realtime.unknown_type": [('{"type": "dance"}', '"dance"'), ('{"type": 7}', "7"), ("{}", "null")],
    "realtime.invalid_frame": [
        ('{"type": "handshake"}', "agent_id"),
        ('{"type": "handshake", "agent_id": ""}', "agent_id"),
        ('{"type": "input_text"}', "text"),
        ('{"type": "input_text", "text": ["a"]}', "text"),
        ('{"type": "input_text", "text": "  "}', "empty"),
        ('{"type": "input_text", "text": "a\\u0000"}', "NUL"),
    ],
}


@pytest.mark.parametrize(
    ("frame", "code", "in_message"),
    [(frame, code, part) for code, cases in PROBLEMS.items() for frame, part in cases],
)
def test_each_problem_has_its_code(frame: str, code: str, in_message: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(frame)
    event = caught.value.event()
    assert event.code == code
    assert in_message in event.message


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=3)
    assert [bucket.take() for _ in range(3)] == [True, True, True]
    bucket.stamp -= 0.0005  # half a token later: still nothing
    bucket.tokens = 0.0
    assert not bucket.take()
    bucket.stamp -= 0.002  # two tokens later
    assert bucket.take() and bucket.take()


def test_a_tick_written_by_hand_is_the_models_json() -> None:
    for remaining, elapsed in [(0, 0), (1, 999), (60_000, 123_456), (2**40, 7)]:
        expected = ServerTick(remaining_ms=remaining, elapsed_ms=elapsed).model_dump_json()
        assert tick_json(remaining, elapsed) == expected
