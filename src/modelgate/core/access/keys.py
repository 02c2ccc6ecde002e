"""API key material: generation, the visible prefix, hashing and constant-time checks.

A key looks like ``mg_live_<12 id chars>_<32 secret chars>`` (base62). The part up to the
second underscore is its prefix: stored in clear, shown in listings and used to find the
record. Only the SHA-256 of the whole key is stored; a key carries 190 bits of randomness,
so a fast hash is the right tool (slow password hashes are for low-entropy secrets).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

__all__ = ["IssuedKey", "hash_key", "issue_key", "key_digest", "key_prefix", "matches"]

_ALPHABET = string.ascii_letters + string.digits
_PREFIX = "mg_live_"
_ID_LENGTH = 12
_SECRET_LENGTH = 32
_PREFIX_LENGTH = len(_PREFIX) + _ID_LENGTH
_KEY_LENGTH = _PREFIX_LENGTH + 1 + _SECRET_LENGTH


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``secret`` is shown once to its owner and never stored."""

    secret: str
    prefix: str
    key_hash: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def issue_key() -> IssuedKey:
    prefix = _PREFIX + _random(_ID_LENGTH)
    secret = f"{prefix}_{_random(_SECRET_LENGTH)}"
    return IssuedKey(secret=secret, prefix=prefix, key_hash=hash_key(secret))


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_digest(secret: str) -> bytes:
    """The SHA-256 of a key as bytes: what :func:`hash_key` writes in hex, without the hex
    (compared with a stored hash decoded once, it saves a third of the check per request)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def key_prefix(secret: str) -> str | None:
    """The lookup prefix of a presented key, or None when it cannot be one of ours."""
    if (
        len(secret) != _KEY_LENGTH
        or not secret.startswith(_PREFIX)
        or secret.rfind("_") != _PREFIX_LENGTH  # the one underscore after the prefix's
    ):
        return None
    return secret[:_PREFIX_LENGTH]


def matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(secret), stored_hash)
