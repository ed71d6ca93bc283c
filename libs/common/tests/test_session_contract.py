"""The session bus contract: JSON round trips (audio as base64), event shapes, stable ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

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
    ServerTurnComplete,
    SessionControl,
    SessionInputEnvelope,
    SessionOutput,
    SessionTiming,
    input_envelope_json,
    stable_id,
    timing_rank,
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


def test_a_timing_travels_on_an_output_only_when_it_changed_and_ranks_by_index() -> None:
    """A turn's outputs carry its timing (`SessionOutput.timing`, left out when None, so a text
    delta is as it was); control messages carry the last index numbered when they were sent
    (None from an older runtime: as of the last output the reader handed on)."""
    delta = SessionOutput(index=4, event=ServerTextDelta(chunk="Hi"))
    assert delta.model_dump_json() == '{"index":4,"event":{"type":"text_delta","chunk":"Hi"}}'
    now = datetime.now(UTC)
    timing = SessionTiming(started_at=now, deadline_at=now + timedelta(seconds=60))
    done = SessionOutput(index=5, event=ServerTurnComplete(), timing=timing)
    assert SessionOutput.model_validate_json(done.model_dump_json()) == done
    # What an older gateway reads (extra fields are ignored) and what an older runtime sends.
    assert SessionOutput.model_validate_json(done.model_dump_json()).event == ServerTurnComplete()
    old = SessionControl.model_validate_json(
        '{"type": "timing", "started_at": "2026-01-01T00:00:00Z", "connection_id": "c"}'
    )
    assert old.index is None and old.deadline_at is None

    control = SessionControl(started_at=now, connection_id="c", index=5)
    assert timing_rank(done, 9) == (5, 0) < timing_rank(control, 9) == (5, 1)
    assert timing_rank(SessionOutput(index=6, event=ServerTurnComplete()), 0) > timing_rank(control, 0)
    assert timing_rank(old, 7) == (7, 1)


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
