"""``AesGcmCipher``: the :class:`~modelgate.core.governance.ports.PayloadCipher` behind logged
payloads, AES-GCM (``cryptography``) with named keys.

Each row stores the id of the key that sealed it and a random 96-bit nonce. Rotation: add
a key to the settings and make it active; new rows use it, old rows open with the key
they name for as long as it is configured (``modelgate payloads rekey`` re-seals them
with the active key, after which the old one can go).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["AesGcmCipher", "decode_key"]

_NONCE_BYTES = 12
_KEY_ID_LENGTH = 64


def decode_key(key_id: str, encoded: str) -> bytes:
    """A base64 AES key of 16, 24 or 32 bytes; ValueError naming the key id otherwise."""
    if not key_id or len(key_id) > _KEY_ID_LENGTH or not key_id.isprintable():
        raise ValueError(f"payload key id {key_id!r} must be 1-{_KEY_ID_LENGTH} characters")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"payload key {key_id!r} is not base64") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(f"payload key {key_id!r} must be 16, 24 or 32 bytes, not {len(key)}")
    return key


class AesGcmCipher:
    """AES-GCM with a key ring: ``keys`` maps key ids to raw keys; ``active`` seals."""

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None) -> None:
        if not keys:
            raise ValueError("payload encryption needs at least one key")
        if active is None:
            if len(keys) != 1:
                raise ValueError("with several payload keys, name the active one")
            active = next(iter(keys))
        if active not in keys:
            raise ValueError(f"the active payload key {active!r} is not among the keys")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active

    @classmethod
    def from_settings(cls, encoded: Mapping[str, str], active: str | None) -> AesGcmCipher:
        """From base64 keys, as the settings hold them."""
        return cls({k: decode_key(k, v) for k, v in encoded.items()}, active)

    @property
    def active_key(self) -> str:
        return self._active

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes, bytes]:
        nonce = os.urandom(_NONCE_BYTES)  # random: at 2**32 rows per key, still safe
        return self._active, nonce, self._keys[self._active].encrypt(nonce, plaintext, associated)

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        aead = self._keys.get(key_id)
        if aead is None:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"payload key '{key_id}' is not configured: rows sealed with it cannot be read",
            )
        try:
            return aead.decrypt(nonce, ciphertext, associated)
        except (InvalidTag, ValueError):
            raise ModelgateError(
                ErrorKind.INTERNAL, "a logged payload failed authentication (altered or moved)"
            ) from None
