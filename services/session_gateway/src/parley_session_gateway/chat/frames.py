"""Frames of the chat WebSocket (happyrobot SDK protocol; docs/chat-ws.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from parley_common.errors import Codes, ErrorCode, envelope
from parley_session_gateway.frame_json import BadFrame, ClientFrameError, clean_str, decode_object, nesting

# ------------------------------------------------------------------------------ client → server


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_In):
    type: Literal["message"]
    content: Annotated[str, Field(min_length=1)]
    # The SDK leaves their shape open; here each one is a JSON object (see `check_artifacts`).
    artifacts: list[dict[str, Any]] | None = None
    id: str | None = None


class ChatTokenRefresh(_In):
    type: Literal["token-refresh"]
    token: Annotated[str, Field(min_length=1, max_length=4096)]


ChatClientFrame = Annotated[ChatMessage | ChatTokenRefresh, Field(discriminator="type")]
_CLIENT: TypeAdapter[ChatClientFrame] = TypeAdapter(ChatClientFrame)
CHAT_CLIENT_TYPES = frozenset({"message", "token-refresh"})

# ------------------------------------------------------------------------------ server → client


class Connected(BaseModel):
    type: Literal["connected"] = "connected"
    session_id: str


class _Numbered(BaseModel):
    """Made from the session's output: numbered 1, 2, … per session, the resume position."""

    seq: int | None = None  # set when sent; left out of frames that have none


class ResponseStart(_Numbered):
    type: Literal["response-start"] = "response-start"
    content: str = ""


class ResponseChunk(_Numbered):
    type: Literal["response-chunk"] = "response-chunk"
    content: str


class ResponseEnd(_Numbered):
    type: Literal["response-end"] = "response-end"
    content: str


class SessionClosed(_Numbered):
    type: Literal["session-closed"] = "session-closed"
    session_id: str
    status: Literal["completed", "timeout", "failed"]
    reason: str
    duration: float  # seconds
    timestamp: datetime


class Heartbeat(BaseModel):
    type: Literal["heartbeat"] = "heartbeat"


class TokenRefreshRequired(BaseModel):
    type: Literal["token-refresh-required"] = "token-refresh-required"


class TokenRefreshAck(BaseModel):
    type: Literal["token-refresh-ack"] = "token-refresh-ack"
    expires_at: datetime


class TokenRefreshError(BaseModel):
    type: Literal["token-refresh-error"] = "token-refresh-error"
    error: str


class TokenExpired(BaseModel):
    type: Literal["token-expired"] = "token-expired"


class MessageAck(BaseModel):
    type: Literal["message-ack"] = "message-ack"
    id: str | None = None
    message: str


class MessageError(_Numbered):
    """Numbered when it relays a runtime error; a refused client frame's has no `seq`."""

    type: Literal["message-error"] = "message-error"
    id: str | None = None
    error: str


SessionFrame = ResponseStart | ResponseChunk | ResponseEnd | SessionClosed | MessageError

# ------------------------------------------------------------------------------ parsing


class ChatFrameError(ClientFrameError):
    """An invalid client frame: answered with `message-error` (echoing `id` when there is one)."""

    def __init__(self, code: ErrorCode, params: dict[str, Any] | None = None, frame_id: str | None = None):
        self.code = code
        self.text = envelope(code, params=params).message
        self.frame_id = frame_id
        super().__init__(f"{code.code}: {self.text}")

    def event(self) -> MessageError:
        return MessageError(id=self.frame_id, error=f"{self.code.code}: {self.text}")


def parse_chat_frame(text: str) -> ChatClientFrame:
    """The frame, or `ChatFrameError` (echoing the frame's `id` when it is a string safe to echo).

    Decoding is the Kivox path's (`frame_json.decode_object`): nesting, lone surrogates, NULs and
    numbers out of range are refused anywhere in the frame."""
    try:
        raw = decode_object(text)
    except BadFrame as exc:
        if exc.problem == "json":
            raise ChatFrameError(Codes.REALTIME_INVALID_JSON) from exc
        bad_id = clean_str(exc.frame.get("id")) if exc.frame else None
        kind = exc.frame.get("type") if exc.frame else None
        name = kind if isinstance(kind, str) and kind in CHAT_CLIENT_TYPES else "frame"
        params = {"type": name, "detail": exc.detail}
        raise ChatFrameError(Codes.REALTIME_INVALID_FRAME, params, bad_id) from exc
    frame_id = clean_str(raw.get("id"))
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CHAT_CLIENT_TYPES:
        raise ChatFrameError(Codes.REALTIME_UNKNOWN_TYPE, {"type": json.dumps(kind)[:100]}, frame_id)
    try:
        frame = _CLIENT.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        params = {"type": kind, "detail": f"{where}: {first['msg']}"}
        raise ChatFrameError(Codes.REALTIME_INVALID_FRAME, params, frame_id) from exc
    if isinstance(frame, ChatMessage) and not frame.content.strip():
        detail = "content: must not be empty"
        raise ChatFrameError(Codes.REALTIME_INVALID_FRAME, {"type": kind, "detail": detail}, frame_id)
    return frame


# ------------------------------------------------------------------------------ artifacts

ARTIFACTS_MAX_DEPTH = 16  # nesting levels inside one artifact


def check_artifacts(frame: ChatMessage, *, max_items: int, max_bytes: int) -> str | None:
    """The message's artifacts as the JSON the agent gets, None without any; bad ones are refused.

    Shape: a list of at most `max_items` JSON objects, nested at most `ARTIFACTS_MAX_DEPTH` deep,
    `max_bytes` at most as JSON (UTF-8).
    """
    artifacts = frame.artifacts
    if not artifacts:
        return None

    def refuse(detail: str) -> ChatFrameError:
        return ChatFrameError(Codes.REALTIME_INVALID_FRAME, {"type": frame.type, "detail": detail}, frame.id)

    if len(artifacts) > max_items:
        raise refuse(f"artifacts: {len(artifacts)} artifacts, at most {max_items} are accepted")
    for n, artifact in enumerate(artifacts):
        if nesting(artifact) > ARTIFACTS_MAX_DEPTH:
            raise refuse(f"artifacts.{n}: nested deeper than {ARTIFACTS_MAX_DEPTH} levels")
    encoded = json.dumps(artifacts, ensure_ascii=False)
    size = len(encoded.encode())
    if size > max_bytes:
        raise refuse(f"artifacts: {size} bytes as JSON, at most {max_bytes} are accepted")
    return encoded


def with_artifacts(content: str, artifacts: str | None) -> str:
    """The input text the runtime gets: the bus input carries only text, so artifacts ride along
    in it, after the message, as a JSON list between `<artifacts>` tags."""
    if artifacts is None:
        return content
    return f"{content}\n\n<artifacts>\n{artifacts}\n</artifacts>"
