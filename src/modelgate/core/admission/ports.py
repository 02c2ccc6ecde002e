"""The ports of admission, as Protocols, with the values that cross them: the rate limiter
(:class:`RateLimiter`, :class:`Decision`), the quota counters (:class:`QuotaCounter`), the
abuse strikes (:class:`StrikeStore`), where the inference service meters each request
(:class:`UsageSink`), and where idempotency records live and how they keep a secret sealed
(:class:`IdempotencyStore`, :class:`Cipher`).

Each port is shaped by its use and atomic in every backend (no get-then-set), so a limit, a
quota or a key holds across the processes and replicas that share the backend. Contracts
are stated on each port; the implementations live outside ``core/`` (``modelgate.limits``,
``modelgate.storage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

__all__ = [
    "Cipher",
    "Decision",
    "ExplanationMeter",
    "IdempotencyRecord",
    "IdempotencyStore",
    "ImmediateQuotaCounter",
    "ImmediateRateLimiter",
    "QuotaCharge",
    "QuotaCounter",
    "QuotaResult",
    "RateLimiter",
    "StoredAnswer",
    "StrikeStore",
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


class ExplanationMeter(Protocol):
    """Where explanations are metered (the usage recorder): the rows explained, a usage
    unit of their own (docs/explanations.md), and the compute they took, in the same
    per-minute group as the inference they explain (status ``ok``, not from the cache).
    Like ``record``, no I/O."""

    def record_explanation(
        self,
        tenant_id: str,
        key_id: str | None,
        model: str,
        version: str | None,
        *,
        hardware: str,
        rows: int,
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


# Decision, QuotaCharge and QuotaResult are immutable values built several times per
# request: as named tuples they cost well under half of a frozen dataclass to build.
class Decision(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    #: seconds until the window (or bucket) is full again
    reset_after_s: float
    #: seconds to wait before a retry can succeed; 0 when allowed
    retry_after_s: float


class RateLimiter(Protocol):
    """``hit(key, limit, window_s, cost)``: admit ``cost`` units under ``limit`` per
    ``window_s`` seconds for ``key`` if they fit, atomically; a refused hit takes nothing.

    The algorithm is GCRA (a token bucket with ``limit`` tokens refilled over ``window_s``),
    so bursts up to ``limit`` pass and the long-run rate is ``limit / window_s``.
    """

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...


class ImmediateRateLimiter(RateLimiter, Protocol):
    """A limiter whose answer needs no wait (in this process): ``hit_now`` is ``hit``
    without a coroutine, which admission calls instead when a limiter has it."""

    def hit_now(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision: ...


class QuotaCharge(NamedTuple):
    """Add ``amount`` to counter ``key``. With a ``limit``, refuse when the counter would
    pass it: ``used + max(amount, 1) > limit`` (an amount of 0 asks "is any left?").
    ``seed`` is the counter's value when it does not exist yet (see :class:`QuotaCounter`).
    """

    key: str
    amount: int
    limit: int | None
    ttl_s: float
    seed: int | None = None


class QuotaResult(NamedTuple):
    allowed: bool
    #: each counter after the call (unchanged when refused)
    used: tuple[int, ...]
    #: the index of the first charge that refused
    refused: int | None = None


class QuotaCounter(Protocol):
    """``charge(charges)``: all or nothing, atomically, in one round trip.

    If any counter does not exist and its charge has no ``seed``, nothing changes and the
    answer is None: the caller finds the seeds and calls again. A counter is created with
    its seed (only if it still does not exist) and expires ``ttl_s`` seconds after.
    """

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None: ...

    async def close(self) -> None: ...


class ImmediateQuotaCounter(QuotaCounter, Protocol):
    """A quota counter whose answer needs no wait (in this process): ``charge_now`` is
    ``charge`` without a coroutine, which quotas call instead when a counter has it."""

    def charge_now(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None: ...


class StrikeStore(Protocol):
    """Where failures are counted and blocks kept, per subject.

    Contract: ``strike`` adds one failure and returns the count in the subject's current
    window, this one included, atomically (concurrent strikes of one subject return distinct
    counts); a window starts with the first strike after the previous one ended (fixed
    windows). ``block`` blocks a subject for ``seconds`` from now, replacing any block it
    had. ``blocked_for`` is the seconds left of a subject's block, 0.0 when it has none.
    Unknown subjects are not an error. A backend whose storage fails raises
    ``ModelgateError(UNAVAILABLE)``.
    """

    async def strike(self, subject: str, window_s: float) -> int: ...

    async def block(self, subject: str, seconds: float) -> None: ...

    async def blocked_for(self, subject: str) -> float: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A finished request's answer. ``sealed_with`` names the cipher key when ``body`` is
    sealed (``nonce`` beside it); ``withheld``: ``body`` is the answer less its secret."""

    status: int
    body: bytes
    content_type: str = "application/json"
    sealed_with: str | None = None
    nonce: bytes | None = None
    withheld: bool = False


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    owner: str
    key: str
    method: str
    path: str
    request_hash: str
    created_at: datetime
    #: None while the first request runs
    answer: StoredAnswer | None = None


class IdempotencyStore(Protocol):
    """Where idempotency records live (``storage/sql/idempotency.py``, ``memory/``).

    Every method is atomic across the processes sharing the store. A database that cannot
    be reached is UNAVAILABLE; text a backend cannot hold is INVALID_ARGUMENT."""

    async def begin(
        self, record: IdempotencyRecord, *, expired_before: datetime, stale_before: datetime
    ) -> IdempotencyRecord | None:
        """Store ``record`` (unfinished) and answer None when ``(owner, key)`` has no
        record, or one made before ``expired_before``, or an unfinished one made before
        ``stale_before`` (its request never ended: the process stopped); otherwise change
        nothing and answer the record found."""
        ...

    async def complete(
        self, owner: str, key: str, created_at: datetime, answer: StoredAnswer
    ) -> bool:
        """Keep ``answer`` in the unfinished record made at ``created_at``; False when there
        is none (it went stale and another request took it over)."""
        ...

    async def release(self, owner: str, key: str, created_at: datetime) -> bool:
        """Delete the unfinished record made at ``created_at``; False when there is none."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete every record made before ``before``; answers how many."""
        ...
