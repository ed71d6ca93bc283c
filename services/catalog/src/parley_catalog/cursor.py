"""Opaque keyset cursors: the sort key of the last item of a page, base64url-encoded JSON.

Keyset (not offset) pagination: rows arriving while a client pages never shift or repeat items.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, TypeVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from parley_common.errors import Codes, ParleyError

K = TypeVar("K", bound=BaseModel)


class ConversationKey(BaseModel):
    started_at: AwareDatetime
    id: UUID


class MessageKey(BaseModel):
    seq: Annotated[int, Field(ge=0, lt=2**63)]
    id: UUID


def encode(key: BaseModel) -> str:
    return base64.urlsafe_b64encode(key.model_dump_json().encode()).decode().rstrip("=")


def decode(raw: str, model: type[K]) -> K:
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return model.model_validate(json.loads(data))
    except (ValueError, binascii.Error, ValidationError, UnicodeDecodeError, RecursionError) as exc:
        raise ParleyError(Codes.INVALID_CURSOR) from exc
