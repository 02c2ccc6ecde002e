"""The ports of admission, as Protocols: where the inference service meters each request.
(The rate limiter's port is :class:`~modelgate.core.admission.limits.RateLimiter`.)

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
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
