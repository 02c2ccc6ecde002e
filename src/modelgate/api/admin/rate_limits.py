"""Rate limits of ``/admin`` per tenant, in the limiter the inference path uses (GCRA,
atomic; with Redis, shared by every replica): what one tenant's credential may make the
server do, however it loops.

Two buckets per tenant, shared by all its keys:

- **requests**: every ``/admin`` request, ``admin_rate_limit`` per second with bursts of
  ``admin_rate_burst`` (a dashboard refreshing every 2 s over a dozen models stays well
  within the defaults);
- **audits**: fairness audits actually computed (a Fairlearn pass over up to
  ``fairness_max_rows`` rows in a thread), ``fairness_audits_per_minute``. An answer from
  the audit cache (:mod:`modelgate.fairness.audit_cache`) and one shared with an identical
  audit already running cost nothing here: only a caller whose audit starts a computation
  pays.

The request bucket is spent before the body is read: the REST app
(:meth:`modelgate.api.rest.app.RestApp._admin`) authenticates the caller from its headers
(through the key cache) and calls :meth:`AdminRateLimits.request` there, then marks the
scope (:data:`CHECKED`) so the admin app's own dependency, which stays for an admin app
served on its own, does not count the request twice. The audit bucket is spent in the
fairness route, where the audit cache says whether a computation starts.

A refusal is RATE_LIMITED: 429 in the admin API's shape, with ``Retry-After`` and the
``X-RateLimit-*`` headers. Operators (the bootstrap admin key and ``tenants:admin`` keys)
are not limited: they run the server, and an operator key is the one credential that can
already do anything.
"""

from __future__ import annotations

from modelgate.core.access.authorization import is_operator
from modelgate.core.access.identity import Principal
from modelgate.core.admission.admission import bucket, rate_limit_details
from modelgate.core.admission.ports import RateLimiter
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["CHECKED", "AdminRateLimits"]

#: the ASGI scope key set once the request bucket was spent for the request
CHECKED = "modelgate.admin_rate_checked"


class AdminRateLimits:
    """``request`` before every admin route, ``audit`` before a fairness audit is computed;
    each raises RATE_LIMITED when the caller's tenant has spent its bucket. A limit of 0
    turns its bucket off."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        requests_per_second: float = 10.0,
        burst: int = 60,
        audits_per_minute: int = 10,
    ) -> None:
        self.limiter = limiter
        self._requests = bucket(requests_per_second, burst) if requests_per_second > 0 else None
        self._audits = (
            bucket(audits_per_minute / 60, audits_per_minute) if audits_per_minute else None
        )

    async def request(self, principal: Principal | None) -> None:
        if self._requests is not None and _limited(principal):
            assert principal is not None
            b = self._requests
            await self._hit(f"admin:{principal.tenant_id}", b.limit, b.window_s, "requests")

    async def audit(self, principal: Principal | None) -> None:
        if self._audits is not None and _limited(principal):
            assert principal is not None
            b = self._audits
            await self._hit(f"admin-audit:{principal.tenant_id}", b.limit, b.window_s, "audits")

    async def _hit(self, key: str, limit: int, window_s: float, what: str) -> None:
        decision = await self.limiter.hit(key, limit, window_s)
        if not decision.allowed:
            raise ModelgateError(
                ErrorKind.RATE_LIMITED,
                f"admin API rate limit exceeded: a tenant may make {limit} {what} per "
                f"{window_s:g} s",
                retry_after=decision.retry_after_s,
                details=rate_limit_details(decision),
            )


def _limited(principal: Principal | None) -> bool:
    return principal is not None and not is_operator(principal)
