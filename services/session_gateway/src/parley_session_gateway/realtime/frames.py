"""Client frames: parsed and validated one by one, each problem reported with a precise code."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from parley_common.errors import Codes, ErrorCode, envelope
from parley_common.session_contract import (
    CLIENT_MESSAGE_TYPES,
    ClientInputText,
    ClientMessage,
    ServerError,
)

_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class FrameError(Exception):
    def __init__(self, code: ErrorCode, params: dict[str, Any] | None = None) -> None:
        self.code = code
        self.params = params or {}
        super().__init__(code.code)

    def event(self) -> ServerError:
        return ServerError(code=self.code.code, message=envelope(self.code, params=self.params).message)


def parse_client_frame(text: str) -> ClientMessage:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise FrameError(Codes.REALTIME_INVALID_JSON) from exc
    if not isinstance(raw, dict):
        raise FrameError(Codes.REALTIME_INVALID_JSON)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_MESSAGE_TYPES:
        raise FrameError(Codes.REALTIME_UNKNOWN_TYPE, {"type": json.dumps(kind)[:100]})
    try:
        message = _CLIENT.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        raise FrameError(
            Codes.REALTIME_INVALID_FRAME, {"type": kind, "detail": f"{where}: {first['msg']}"}
        ) from exc
    if isinstance(message, ClientInputText):
        if not message.text.strip():
            raise FrameError(
                Codes.REALTIME_INVALID_FRAME, {"type": kind, "detail": "text: must not be empty"}
            )
        if "\x00" in message.text:
            # PostgreSQL text cannot hold NUL: the transcript could not keep this message.
            detail = "text: NUL characters are not allowed"
            raise FrameError(Codes.REALTIME_INVALID_FRAME, {"type": kind, "detail": detail})
    return message
