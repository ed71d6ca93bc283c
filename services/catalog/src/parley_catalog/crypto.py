"""Encryption at rest for agent, template and tool secrets (Fernet: AES-128-CBC + HMAC-SHA256).

`PARLEY_CATALOG_SECRET_KEY` holds one or more comma-separated keys of any form; each is stretched
into a Fernet key with scrypt, so an operator may paste any random string. The first key encrypts,
every key decrypts: prepend a new key, run `python -m parley_catalog.rotate_secrets`, then drop the
old one (docs/catalog.md).
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# A fixed salt: the derived key must be the same in every replica and after every restart. The
# keys are meant to be random; scrypt only hardens a weak one against guessing.
_SALT = b"parley.catalog.secrets.v1"
MASK = "••••"
# Secrets shorter than this show no characters at all; longer ones show their last four.
_HINT_MIN_LENGTH = 16


class SecretKeyError(ValueError):
    """The configured key list is empty or a stored value cannot be decrypted with it."""


@lru_cache(maxsize=32)
def derive_key(passphrase: str) -> bytes:
    kdf = Scrypt(salt=_SALT, length=32, n=2**14, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode()))


def parse_keys(value: str) -> list[str]:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise SecretKeyError("PARLEY_CATALOG_SECRET_KEY is empty")
    return keys


class SecretBox:
    def __init__(self, keys: str) -> None:
        self._fernet = MultiFernet([Fernet(derive_key(k)) for k in parse_keys(keys)])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt with the first key (a no-op in effect if it already is)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured keys") from exc


def mask(value: str) -> str:
    """What an API response shows instead of a secret: `••••` plus the last four characters of
    secrets of 16 characters or more (enough to tell keys apart, too little to matter)."""
    if len(value) >= _HINT_MIN_LENGTH:
        return MASK + value[-4:]
    return MASK
