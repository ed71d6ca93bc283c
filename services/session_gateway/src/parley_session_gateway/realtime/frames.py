"""Client frames: parsed and validated one by one, each problem reported with a precise code.

Decoding (`frame_json.decode_object`) refuses what no later step could carry: nesting deeper than
`MAX_DEPTH`, lone surrogates and NUL characters in any string, numbers out of range.
"""

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
from parley_session_gateway.frame_json import BadFrame, ClientFrameError, decode_object

_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class FrameError(ClientFrameError):
    def __init__(self, code: ErrorCode, params: dict[str, Any] | None = None) -> None:
        self.code = code
        self.params = params or {}
        super().__init__(code.code)

    def event(self) -> ServerError:
        return ServerError(code=self.code.code, message=envelope(self.code, params=self.params).message)


def parse_client_frame(text: str) -> ClientMessage:
    try:
        raw = decode_object(text)
    except BadFrame as exc:
        if exc.problem == "json":
            raise FrameError(Codes.REALTIME_INVALID_JSON) from exc
        kind = exc.frame.get("type") if exc.frame else None
        name = kind if isinstance(kind, str) and kind in CLIENT_MESSAGE_TYPES else "frame"
        raise FrameError(Codes.REALTIME_INVALID_FRAME, {"type": name, "detail": exc.detail}) from exc
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
    if isinstance(message, ClientInputText) and not message.text.strip():
        raise FrameError(Codes.REALTIME_INVALID_FRAME, {"type": kind, "detail": "text: must not be empty"})
    return message
