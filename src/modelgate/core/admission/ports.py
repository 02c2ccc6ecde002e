"""The ports of admission, as Protocols: where the inference service meters each request,
and how idempotency records keep a secret sealed.
(The rate limiter's port is :class:`~modelgate.core.admission.limits.RateLimiter`.)

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "Cipher",
    "UsageSink",
]


class UsageSink(Protocol):
    """Where the inference service meters each request (the usage recorder).

    ``record`` runs on the request path: it must not block or do I/O."""

    def record(
        self,
        tenant_id: str,
        key_id: str | None,
        model: str,
        version: str | None,
        *,
        hardware: str,
        status: str,
        cache_hit: bool,
        rows: int,
        tokens: int,
        latency_ms: float,
        compute_ms: float,
    ) -> None: ...


class Cipher(Protocol):
    """Authenticated encryption with named keys, as an idempotency record needs it to keep
    an answer that holds a secret (the payload cipher, AES-GCM in ``storage/crypto.py``, is
    one).

    ``encrypt`` seals with the active key and answers ``(key id, nonce, ciphertext)``;
    ``decrypt`` opens with the key the record names. A wrong key, nonce, associated data or
    a changed byte is INTERNAL (never returns wrong plaintext); an unknown key id is
    FAILED_PRECONDITION."""

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes, bytes]: ...

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes: ...
