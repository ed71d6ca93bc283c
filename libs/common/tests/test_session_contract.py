"""The session bus contract: JSON round trips (audio as base64), event shapes, stable ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from parley_common.session_contract import (
    ClientConnected,
    ClientDisconnected,
    InputAudio,
    InputCancel,
    InputEnd,
    InputText,
    ServerAudioDelta,
    ServerSessionClosed,
    ServerTextDelta,
    SessionInputEnvelope,
    SessionOutput,
    input_envelope_json,
    stable_id,
)


def test_audio_is_raw_bytes_in_python_and_base64_on_the_bus() -> None:
    audio = bytes(range(256))
    item = InputAudio(at=datetime.now(UTC), connection_id="c", mode="utterance", audio=audio)
    body = SessionInputEnvelope(input=item).model_dump_json()
    assert '"audio":"AAECAw' in body
    parsed = SessionInputEnvelope.model_validate_json(body).input
    assert isinstance(parsed, InputAudio) and parsed.audio == audio

    out = SessionOutput(index=3, event=ServerAudioDelta(size=3, audio=b"\x00\x01\x02"))
    again = SessionOutput.model_validate_json(out.model_dump_json())
    assert isinstance(again.event, ServerAudioDelta) and again.event.audio == b"\x00\x01\x02"


def test_server_events_serialize_to_the_spec_shapes() -> None:
    assert ServerTextDelta(chunk="Hi").model_dump(mode="json") == {"type": "text_delta", "chunk": "Hi"}
    closed = SessionOutput.model_validate_json(
        '{"index": 9, "event": {"type": "session_closed", "reason": "timeout"}}'
    )
    assert isinstance(closed.event, ServerSessionClosed) and closed.event.model_dump(mode="json") == {
        "type": "session_closed",
        "reason": "timeout",
    }


def test_stable_ids_are_deterministic_per_conversation() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert stable_id(a, "message:0") == stable_id(a, "message:0")
    assert len({stable_id(a, "message:0"), stable_id(a, "message:1"), stable_id(b, "message:0")}) == 3


def test_an_envelope_written_without_the_model_is_the_same_bytes() -> None:
    """`input_envelope_json` (what the gateway publishes) is `SessionInputEnvelope`'s own JSON for
    every kind of input, and reads back as the same input."""
    now = datetime.now(UTC)
    items = [
        InputText(at=now, connection_id="c", text='h\u00e9llo "q" \\ \u2028 </script> \U0001f600'),
        InputAudio(at=now, connection_id="c", mode="stream", audio=bytes(range(256))),
        InputCancel(at=now, connection_id="c"),
        InputEnd(at=now, connection_id="c"),
        ClientConnected(at=now, connection_id="c"),
        ClientDisconnected(at=now, connection_id="c"),
    ]
    for item in items:
        body = input_envelope_json(item)
        assert body == SessionInputEnvelope(input=item).model_dump_json().encode()
        assert SessionInputEnvelope.model_validate_json(body).input == item
