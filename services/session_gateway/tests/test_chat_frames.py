"""Chat WebSocket frames and refresh scopes, without a socket."""

from __future__ import annotations

import json
import uuid

import pytest

from parley_common.auth_contract import CredentialKind, Principal, TokenEnv
from parley_session_gateway.chat.connection import same_scope
from parley_session_gateway.chat.frames import ChatFrameError, ChatMessage, ChatTokenRefresh, parse_chat_frame


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
