"""Secrets as stored (encrypted, with their mask) and as shown (masked).

Stored form, in a JSONB list: `{"key", "description", "ciphertext", "masked"}`. The mask is computed
when the value is written, so reading an agent never decrypts anything; only the runtime snapshot
(`catalog.agent.resolve`) and webhook execution do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from parley_catalog.crypto import SecretBox, SecretKeyError, mask
from parley_common.errors import Codes, ParleyError


class StoredSecret(BaseModel):
    key: str
    description: str | None = None
    ciphertext: str
    masked: str


class SecretInput(BaseModel):
    """What a caller writes: a key and its value (and an optional description)."""

    key: str
    value: str
    description: str | None = None


class Given(Protocol):
    """A secret as a request schema carries it (`AgentSecret`)."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def description(self) -> str | None: ...


def inputs(given: Iterable[Given]) -> list[SecretInput]:
    return [SecretInput(key=s.key, value=s.value, description=s.description) for s in given]


def load(raw: Iterable[Any]) -> list[StoredSecret]:
    return [StoredSecret.model_validate(item) for item in raw]


def dump(stored: Sequence[StoredSecret]) -> list[dict[str, Any]]:
    return [s.model_dump(exclude_none=True) for s in stored]


def seal(
    box: SecretBox, incoming: Sequence[SecretInput], existing: Sequence[StoredSecret]
) -> list[StoredSecret]:
    """Encrypt `incoming`, which replaces the whole list.

    A value equal to the current mask of the same key keeps the stored secret: a client that reads
    an agent and writes it back unchanged must not overwrite its secrets with their masks.
    """
    current = {s.key: s for s in existing}
    sealed: list[StoredSecret] = []
    for item in incoming:
        kept = current.get(item.key)
        if kept is not None and item.value == kept.masked:
            sealed.append(kept.model_copy(update={"description": item.description}))
            continue
        sealed.append(
            StoredSecret(
                key=item.key,
                description=item.description,
                ciphertext=box.encrypt(item.value),
                masked=mask(item.value),
            )
        )
    return sealed


def write(
    box: SecretBox, incoming: Sequence[SecretInput], stored: Iterable[Any] = ()
) -> list[dict[str, Any]]:
    """The stored form of `incoming`, replacing the list stored as `stored` (`seal`)."""
    return dump(seal(box, incoming, load(stored)))


def merge(base: Sequence[StoredSecret], override: Sequence[StoredSecret]) -> list[StoredSecret]:
    """`base` with the keys of `override` replaced or added (agent from template + request)."""
    merged = {s.key: s for s in base}
    merged.update({s.key: s for s in override})
    return list(merged.values())


def reveal(box: SecretBox, stored: Iterable[StoredSecret]) -> dict[str, str]:
    try:
        return {s.key: box.decrypt(s.ciphertext) for s in stored}
    except SecretKeyError as exc:
        raise ParleyError(Codes.SECRET_UNREADABLE) from exc


def rotate(box: SecretBox, raw: Iterable[Any]) -> list[dict[str, Any]]:
    """Re-encrypt every secret of a stored list with the first configured key."""
    return dump([s.model_copy(update={"ciphertext": box.rotate(s.ciphertext)}) for s in load(raw)])
