"""Passwords (argon2id) and opaque tokens (random, stored as an HMAC-SHA256 keyed hash).

Session tokens and API keys are 256-bit random values, so a fast keyed hash is enough to store
them safely (no dictionary to attack); passwords are low-entropy and get argon2id.

A password's hash or check takes ~0.14 s of CPU (64 MiB, three passes) and would stall the event
loop that long: every other request of the process, `auth.verify` over the bus above all, waited
behind each login, and a burst of sign-ups timed verifications out (504). So they run on threads
of their own (argon2 releases the GIL), two at once: each holds 64 MiB, and the process must stay
within its memory limit (512 MiB on Kubernetes) whatever a burst of logins asks; more would queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

API_KEY_PREFIX = "sk_live_"
SESSION_PREFIX = "ps_"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Hash of a random password: lets login spend the same time whether or not the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
HASHING_THREADS = 2
_ARGON2 = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="argon2")


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_ARGON2, _hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(_ARGON2, _verify, password_hash, password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_reset_token() -> str:
    return secrets.token_urlsafe(32)


def api_key_display_prefix(key: str) -> str:
    """What lists show to identify a key without revealing it: `sk_live_` and four characters."""
    return key[: len(API_KEY_PREFIX) + 4]


def token_hash(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
