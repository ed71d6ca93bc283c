"""The events data channel's client → server side: what a page may send (`cancel`,
`input_text`, `end`), checked like `/realtime` checks its frames, and the `error` events that
answer anything else."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from parley_common.errors import Codes, ErrorCode, envelope
from parley_common.media_contract import DC_CLIENT_MESSAGE, DC_CLIENT_TYPES, DcCancel, DcEnd, DcInputText

ClientMessage = DcCancel | DcInputText | DcEnd


def error_event(code: ErrorCode, message: str | None = None, **params: Any) -> str:
    env = envelope(code, message, params or None)
    return json.dumps({"type": "error", "code": env.code, "message": env.message})


def parse_client_message(message: str | bytes) -> ClientMessage | str:
    """The page's message, or the `error` event to send back instead."""
    if isinstance(message, bytes):
        return error_event(Codes.REALTIME_INVALID_FRAME, "Data-channel messages are JSON text.")
    try:
        data = json.loads(message)
    except ValueError:
        return error_event(Codes.REALTIME_INVALID_JSON)
    if not isinstance(data, dict):
        return error_event(Codes.REALTIME_INVALID_JSON)
    if data.get("type") not in DC_CLIENT_TYPES:
        return error_event(Codes.REALTIME_UNKNOWN_TYPE, type=str(data.get("type"))[:40])
    try:
        return DC_CLIENT_MESSAGE.validate_python(data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in detail["loc"][1:])
        return error_event(
            Codes.REALTIME_INVALID_FRAME, f"Invalid {data['type']} message: {where}: {detail['msg']}"
        )
