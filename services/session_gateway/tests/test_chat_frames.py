"""Chat WebSocket frames and refresh scopes, without a socket."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from parley_common.auth_contract import CredentialKind, Principal, TokenEnv
from parley_session_gateway.chat.connection import same_scope
from parley_session_gateway.chat.frames import (
    ChatFrameError,
    ChatMessage,
    ChatTokenRefresh,
    check_artifacts,
    parse_chat_frame,
    with_artifacts,
)
from parley_session_gateway.resume import ChatRecord


def test_valid_frames_parse_to_their_models() -> None:
    msg = parse_chat_frame(json.dumps({"type": "message", "content": "hi", "id": "1", "artifacts": []}))
    assert isinstance(msg, ChatMessage) and (msg.content, msg.id) == ("hi", "1")
    refresh = parse_chat_frame(json.dumps({"type": "token-refresh", "token": "t"}))
    assert isinstance(refresh, ChatTokenRefresh) and refresh.token == "t"


@pytest.mark.parametrize(
    ("frame", "frame_id", "error"),
    [
        ("nope", None, "realtime.invalid_json: The frame is not a JSON object."),
        ('{"type": "shout", "id": "a"}', "a", 'realtime.unknown_type: Unknown message type "shout".'),
        ('{"type": "message", "id": "b"}', "b", "realtime.invalid_frame: Invalid message message: content"),
        ('{"type": "message", "content": " ", "id": "c"}', "c", "content: must not be empty"),
        ('{"type": "message", "content": "x", "id": 3}', None, "id: Input should be a valid string"),
        ('{"type": "token-refresh"}', None, "Invalid token-refresh message: token: Field required"),
    ],
)
def test_invalid_frames_echo_the_id(frame: str, frame_id: str | None, error: str) -> None:
    with pytest.raises(ChatFrameError) as info:
        parse_chat_frame(frame)
    event = info.value.event()
    assert event.id == frame_id and error in event.error


def _token(agent: str, org: uuid.UUID, env: TokenEnv = TokenEnv.PRODUCTION) -> Principal:
    return Principal(
        kind=CredentialKind.CLIENT_TOKEN,
        credential_id=uuid.uuid4(),
        org_id=org,
        agent_id=agent,
        env=env,
        token_type="chat",
    )


def test_refresh_scope_is_agent_org_and_env() -> None:
    org, agent = uuid.uuid4(), str(uuid.uuid4())
    assert same_scope(_token(agent, org), _token(agent.upper(), org))
    assert not same_scope(_token(agent, org), _token(str(uuid.uuid4()), org))
    assert not same_scope(_token(agent, org), _token(agent, uuid.uuid4()))
    assert not same_scope(_token(agent, org), _token(agent, org, TokenEnv.STAGING))


def _message(artifacts: object, frame_id: str = "m") -> ChatMessage:
    frame = parse_chat_frame(
        json.dumps({"type": "message", "content": "see", "artifacts": artifacts, "id": frame_id})
    )
    assert isinstance(frame, ChatMessage)
    return frame


def test_artifacts_ride_along_in_the_input_text() -> None:
    none: list[dict[str, object]] | None
    for none in (None, []):
        assert check_artifacts(_message(none), max_items=2, max_bytes=1024) is None
    assert with_artifacts("see", None) == "see"
    artifacts = [{"type": "file", "name": "café.pdf"}, {"type": "link", "url": "https://x.test"}]
    encoded = check_artifacts(_message(artifacts), max_items=2, max_bytes=1024)
    assert encoded is not None and json.loads(encoded) == artifacts
    assert with_artifacts("see", encoded) == f"see\n\n<artifacts>\n{encoded}\n</artifacts>"


@pytest.mark.parametrize(
    ("artifacts", "error"),
    [
        ({"type": "file"}, "artifacts: Input should be a valid list"),
        (["a string"], "artifacts.0: Input should be a valid dictionary"),
        ([{"a": 1}, None], "artifacts.1: Input should be a valid dictionary"),
    ],
)
def test_artifacts_of_the_wrong_shape_echo_the_id(artifacts: object, error: str) -> None:
    with pytest.raises(ChatFrameError) as info:
        _message(artifacts, "bad")
    event = info.value.event()
    assert event.id == "bad" and event.error.startswith("realtime.invalid_frame") and error in event.error


@pytest.mark.parametrize(
    ("artifacts", "error"),
    [
        ([{"n": n} for n in range(3)], "artifacts: 3 artifacts, at most 2 are accepted"),
        ([{"text": "x" * 300}], "artifacts: 314 bytes as JSON, at most 256 are accepted"),
        ([{"a": [[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]}], "artifacts.0: nested deeper than 16 levels"),
    ],
)
def test_too_many_too_large_or_too_deep_artifacts_are_refused(artifacts: object, error: str) -> None:
    with pytest.raises(ChatFrameError) as info:
        check_artifacts(_message(artifacts, "big"), max_items=2, max_bytes=256)
    event = info.value.event()
    assert event.id == "big" and event.error == f"realtime.invalid_frame: Invalid message message: {error}"


def test_absurdly_deep_json_is_refused_for_its_depth() -> None:
    with pytest.raises(ChatFrameError) as info:
        parse_chat_frame("[" * 100_000)
    error = info.value.event().error
    assert error == "realtime.invalid_frame: Invalid frame message: nested deeper than 32 levels"


def test_a_resume_needs_a_token_of_the_session_scope() -> None:
    org, agent = uuid.uuid4(), str(uuid.uuid4())
    record = ChatRecord(
        conversation_id=uuid.uuid4(),
        agent_id=agent,
        token_agent_id=agent,
        org_id=str(org),
        env=TokenEnv.PRODUCTION.value,
        started_at=datetime.now(UTC),
    )
    assert record.admits(_token(agent.upper(), org))
    assert not record.admits(_token(str(uuid.uuid4()), org))
    assert not record.admits(_token(agent, uuid.uuid4()))
    assert not record.admits(_token(agent, org, TokenEnv.STAGING))
