"""Admission: the rate limits a request must fit, checked before any work is done.

Two limits, each one atomic ``RateLimiter.hit`` (GCRA: a bucket of ``burst`` requests
refilled at ``requests_per_second``):

- per tenant, from its plan (``requests_per_second``, ``burst``), shared by all its keys
  and, with the Redis limiter, by every replica;
- per model, from the manifest's ``rate_limit`` (protects a model whoever calls it).

The tenant is checked first, so a request refused for its tenant does not spend the
model's budget. A request refused by the model's limit has spent one tenant token: the two
checks are separate atomic steps, and this small over-count is the price of not holding a
lock across backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelgate.core.identity import Principal
from modelgate.core.limits import Decision, RateLimiter
from modelgate.core.manifest import ModelManifest
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["Admission", "bucket", "rate_limit_details"]


@dataclass(frozen=True, slots=True)
class _Bucket:
    limit: int
    window_s: float


def bucket(requests_per_second: float, burst: int | None) -> _Bucket:
    """GCRA parameters for a rate and a burst (default: one second's worth)."""
    size = burst if burst is not None else max(1, math.ceil(requests_per_second))
    return _Bucket(size, size / requests_per_second)


class Admission:
    def __init__(self, limiter: RateLimiter):
        self.limiter = limiter

    async def admit(self, principal: Principal | None, manifest: ModelManifest) -> Decision | None:
        """The tightest decision that applied (for rate-limit headers), or None when no limit
        applies; RATE_LIMITED with ``retry_after`` when one refuses."""
        tightest: Decision | None = None
        plan = principal.plan if principal is not None else None
        if plan is not None and plan.requests_per_second:
            assert principal is not None
            b = bucket(plan.requests_per_second, plan.burst)
            tightest = await self._hit(f"tenant:{principal.tenant_id}", b, "tenant's plan")
        model_limit = manifest.rate_limit
        if model_limit is not None:
            b = bucket(model_limit.requests_per_second, model_limit.burst)
            decision = await self._hit(f"model:{manifest.name}", b, "model's")
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        return tightest

    async def _hit(self, key: str, b: _Bucket, whose: str) -> Decision:
        decision = await self.limiter.hit(key, b.limit, b.window_s)
        if not decision.allowed:
            raise ModelgateError(
                ErrorKind.RATE_LIMITED,
                f"rate limit exceeded: the {whose} limit is {b.limit} requests per "
                f"{b.window_s:g} s",
                retry_after=decision.retry_after_s,
                details=rate_limit_details(decision),
            )
        return decision


def rate_limit_details(decision: Decision) -> dict[str, float]:
    """What the X-RateLimit-Limit / -Remaining / -Reset headers say."""
    return {
        "limit": decision.limit,
        "remaining": decision.remaining,
        "reset": decision.reset_after_s,
    }
