"""Admission: everything a request must fit before the model runs, cheapest check first.

0. **Size**, before admission: the model's ``limits`` (rows, texts, bytes per text,
   tokens; :mod:`modelgate.core.serving.request_size`) are checked as the inputs are validated, so
   a request over them (413) spends no rate limit, slot or quota.
1. **Batch size**: at most ``plan.max_batch_size`` rows per request (413).
2. **Load shedding**: at most ``max_inflight`` inference requests run in this process. A
   plan of priority ``p`` (0-9) may take a slot while fewer than
   ``max_inflight * (0.5 + 0.5 * p / 9)`` are in flight: under overload the lowest tier is
   refused first (at half the capacity), the highest last (503 with ``Retry-After``).
3. **Concurrency**: at most ``plan.max_concurrency`` requests of one tenant in flight in
   this process (429).
4. **Rate limits**, each one atomic ``RateLimiter.hit`` (GCRA: a bucket of ``burst``
   requests refilled at ``requests_per_second``): per tenant from its plan, shared by all
   its keys and, with Redis, by every replica; per API key, when the key has its own
   limit; per model, from the manifest's ``rate_limit`` (protects a model whoever calls).
   An in-process limiter (no Redis) is asked with ``hit_now``, the same step without a
   coroutine (:class:`~modelgate.core.admission.ports.ImmediateRateLimiter`).
5. **Quotas** per day and month (:mod:`modelgate.core.admission.quotas`), one atomic call.

Before all of these, while the process's queueing delay is over its bound, the adapters
shed new inference requests before reading them (:mod:`modelgate.core.admission.overload`),
tenants over their fair share of recent admissions first: every request admitted here is
counted towards its tenant's share (:mod:`modelgate.core.admission.fairness`).

A refusal at step 4 or 5 is noted in the refusal memo, when there is one, for as long as it
is certain to hold (:mod:`modelgate.core.admission.refusals`): the adapters then answer the
caller's next requests from it, before reading them.

A refusal at a later step has spent the tokens of the earlier rate limits: the checks are
separate atomic steps, and this small over-count is the price of not holding a lock across
backends. Slots taken in steps 2 and 3 are given back by :meth:`Admission.release`, which
the caller runs once the request is over, whatever its outcome.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.overload import QueueDelay
from modelgate.core.admission.ports import Decision, RateLimiter
from modelgate.core.admission.quotas import Quotas
from modelgate.core.admission.refusals import RefusalMemo
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import InferenceObserver
from modelgate.core.serving.requests import ANONYMOUS
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["Admission", "bucket", "rate_limit_details", "shed_share"]


#: what a noted rate-limit refusal is shortened by, relative to the bucket's window and
#: absolute (seconds): the limiter's own rounding slack (1e-9 of the window) with room to
#: spare, so that the memo never outlasts the limiter's refusal by a rounding
_WINDOW_SLACK = 1e-6
_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class _Bucket:
    limit: int
    window_s: float


@functools.lru_cache(maxsize=1024)  # a handful of plans and keys: built once, not per request
def bucket(requests_per_second: float, burst: int | None) -> _Bucket:
    """GCRA parameters for a rate and a burst (default: one second's worth)."""
    size = burst if burst is not None else max(1, math.ceil(requests_per_second))
    return _Bucket(size, size / requests_per_second)


@dataclass(frozen=True, slots=True)
class _TenantLimits:
    """What admission asks of a tenant's plan, worked out once per (tenant, plan) instead of
    on every request; ``plan`` is the plan it was built for (compared by identity first: a
    principal's plan is one object while its key is cached)."""

    plan: Plan
    #: the rate-limit key of the tenant, and its plan's bucket (None: no rate limit)
    key: str
    bucket: _Bucket | None
    #: whether its requests are charged against quotas
    quotas: bool
    #: the share of ``max_inflight`` its own requests may fill (:func:`shed_share`)
    share: float


def shed_share(priority: int) -> float:
    """The share of ``max_inflight`` a plan of ``priority`` (0-9) may fill."""
    return 0.5 + 0.5 * min(max(priority, 0), 9) / 9


def _shed_share(principal: Principal | None, limits: _TenantLimits | None) -> float:
    """The share of ``max_inflight`` the principal's requests may fill: all for the admin
    key's own calls, by plan priority for a tenant's (``limits.share``), and by the tenant's
    for a gateway's call made for a tenant."""
    if principal is None or limits is None:
        return 1.0
    if principal.on_behalf is not None:
        return shed_share(principal.on_behalf.priority)
    return limits.share


class Admission:
    def __init__(
        self,
        limiter: RateLimiter,
        *,
        quotas: Quotas | None = None,
        max_inflight: int | None = None,
        observer: InferenceObserver | None = None,
        memo: RefusalMemo | None = None,
        overload: QueueDelay | None = None,
    ):
        self.limiter = limiter
        self.quotas = quotas
        self.max_inflight = max_inflight
        #: rate-limit and quota refusals, noted while certain (None: none are)
        self.memo = memo
        #: shedding on queueing delay, asked by the adapters before a request is read
        #: (None: off)
        self.overload = overload
        #: told of each refusal and each shed request (metrics); only refusals cost a call
        self.observer = observer
        self.inflight = 0
        self._tenant_inflight: dict[str, int] = {}
        #: tenant id -> what its plan asks of admission (bounded: tenants come and go)
        self._tenants: dict[str, _TenantLimits] = {}
        #: key id -> its own rate (requests per second, burst), the rate-limit key and the
        #: bucket (bounded like ``_tenants``)
        self._keys: dict[str, tuple[tuple[float, int | None], str, _Bucket]] = {}

    async def admit(
        self,
        principal: Principal | None,
        manifest: ModelManifest,
        rows: int = 1,
        named: tuple[str, str | None] | None = None,
        *,
        served: tuple[str, str] | None = None,
        model_limit: bool = True,
    ) -> Decision | None:
        """Take a slot for the request, or raise; the tightest rate-limit decision that
        applied (for rate-limit headers), or None when no rate limit applies.

        ``named``: the (model, version) the request named, when that alone decides which
        version answers (no deployment routed it): a refusal by the model's own limit is
        noted under it in the memo; None: it is not noted. ``served``: the (version,
        hardware) that would answer, which the memo's refusals are metered under.
        ``model_limit``: False for a call a node's gateway forwarded, whose model rate limit
        the gateway applied (counted again in the same bucket, it halved the limit).

        After a successful ``admit`` the caller must call :meth:`release` exactly once."""
        if principal is None:
            plan = limits = None
        else:
            plan = principal.plan
            limits = self._tenants.get(principal.tenant_id)
            if limits is None or limits.plan is not plan:
                limits = self._tenant_limits(principal.tenant_id, plan)
        if plan is not None and plan.max_batch_size is not None and rows > plan.max_batch_size:
            self._refused(principal, "batch_size")
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"the plan allows at most {plan.max_batch_size} rows per request, not {rows}",
            )
        if self.max_inflight is not None:
            share = _shed_share(principal, limits)
            if self.inflight >= self.max_inflight * share:
                if self.observer is not None:
                    self.observer.shed(plan.priority if plan is not None else None)
                raise ModelgateError(
                    ErrorKind.OVERLOADED,
                    "the server is overloaded; requests of lower-priority plans are refused first",
                    retry_after=1.0,
                )
        tenant = None
        if plan is not None and plan.max_concurrency is not None:
            assert principal is not None
            tenant = principal.tenant_id
            running = self._tenant_inflight.get(tenant, 0)
            if running >= plan.max_concurrency:
                self._refused(principal, "concurrency")
                raise ModelgateError(
                    ErrorKind.RATE_LIMITED,
                    f"too many requests in flight: the plan allows {plan.max_concurrency} at once",
                    retry_after=1.0,
                )
            self._tenant_inflight[tenant] = running + 1
        self.inflight += 1  # taken before any await, so a burst cannot slip past the checks
        try:
            decision = await self._limits(
                principal, limits, manifest, rows, named, served, model_limit
            )
        except BaseException:
            self._give_back(tenant)
            raise
        if self.overload is not None and principal is not None:  # the tenants' fair shares
            self.overload.admitted(principal)
        return decision

    def release(self, principal: Principal | None) -> None:
        """Give back the slots of a request that :meth:`admit` admitted."""
        if principal is not None and principal.plan.max_concurrency is not None:
            self._give_back(principal.tenant_id)
        else:
            self._give_back(None)

    def _give_back(self, tenant: str | None) -> None:
        self.inflight -= 1
        if tenant is not None:
            left = self._tenant_inflight[tenant] - 1
            if left:
                self._tenant_inflight[tenant] = left
            else:
                del self._tenant_inflight[tenant]

    def _tenant_limits(self, tenant_id: str, plan: Plan) -> _TenantLimits:
        """The limits of ``tenant_id`` on ``plan``, built again when its plan changed (an
        equal plan in another object is the same plan)."""
        found = self._tenants.get(tenant_id)
        if found is not None and found.plan == plan:
            # the same plan in a new object (the key's cache entry was refreshed): kept under
            # the new object, so the tenant's next requests compare by identity again instead
            # of comparing every field of the plan on every request until the next refresh
            limits = dataclasses.replace(found, plan=plan)
        else:
            rate = plan.requests_per_second
            limits = _TenantLimits(
                plan,
                f"tenant:{tenant_id}",
                bucket(rate, plan.burst) if rate else None,
                tenant_id != ADMIN_TENANT and Quotas.applies(plan),
                1.0 if tenant_id == ADMIN_TENANT else shed_share(plan.priority),
            )
        if len(self._tenants) >= 10_000:
            self._tenants.clear()
        self._tenants[tenant_id] = limits
        return limits

    def _key_limits(
        self, subject: str, rate: tuple[float, int | None]
    ) -> tuple[tuple[float, int | None], str, _Bucket]:
        """The rate-limit key and bucket of the API key ``subject`` at ``rate``."""
        if len(self._keys) >= 10_000:
            self._keys.clear()
        known = self._keys[subject] = (rate, f"key:{subject}", bucket(*rate))
        return known

    async def _limits(
        self,
        principal: Principal | None,
        limits: _TenantLimits | None,
        manifest: ModelManifest,
        rows: int,
        named: tuple[str, str | None] | None,
        served: tuple[str, str] | None,
        model_limit: bool,
    ) -> Decision | None:
        memo = self.memo
        # one reading for the request, before any limiter or counter reads its own clock: a
        # refusal noted in the memo counts from it (a hair early, never late)
        asked_at = memo.clock() if memo is not None else 0.0
        limiter = self.limiter
        # an in-process limiter answers without a coroutine: the tenant's and the key's
        # buckets are then two plain calls (read per request: a test may swap the limiter)
        hit_now = getattr(limiter, "hit_now", None)
        tightest: Decision | None = None
        if limits is not None and (b := limits.bucket) is not None:
            if hit_now is not None:
                tightest = hit_now(limits.key, b.limit, b.window_s)
            else:
                tightest = await limiter.hit(limits.key, b.limit, b.window_s)
            if not tightest.allowed:
                raise self._rate_limited(
                    tightest, principal, b, "tenant's plan", "tenant_rate_limit", asked_at, served
                )
        if principal is not None and (rate := principal.key_rate) is not None:
            # the key's rate-limit key and bucket, worked out once per key and rate
            known = self._keys.get(principal.subject)
            if known is None or known[0] != rate:
                known = self._key_limits(principal.subject, rate)
            _, key, b = known
            if hit_now is not None:
                decision = hit_now(key, b.limit, b.window_s)
            else:
                decision = await limiter.hit(key, b.limit, b.window_s)
            if not decision.allowed:
                raise self._rate_limited(
                    decision, principal, b, "API key's", "key_rate_limit", asked_at, served
                )
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        spec = manifest.rate_limit if model_limit else None
        if spec is not None:
            b = bucket(spec.requests_per_second, spec.burst)
            decision = await limiter.hit(f"model:{manifest.name}", b.limit, b.window_s)
            if not decision.allowed:
                raise self._rate_limited(
                    decision,
                    principal,
                    b,
                    "model's",
                    "model_rate_limit",
                    asked_at,
                    served,
                    model=named,
                    note=named is not None,
                )
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        if limits is not None and limits.quotas and self.quotas is not None:
            assert principal is not None
            try:
                await self.quotas.admit(principal, rows)
            except ModelgateError as exc:
                if exc.kind is ErrorKind.RATE_LIMITED:
                    reason = f"quota_{exc.details.get('quota', 'unknown')}"
                    self._refused(principal, reason)
                    if memo is not None:
                        self._note_quota(memo, principal, exc, reason, asked_at, served)
                raise
        return tightest

    def _refused(self, principal: Principal | None, reason: str) -> None:
        if self.observer is not None:
            tenant = principal.tenant_id if principal is not None else ANONYMOUS
            self.observer.refused(tenant, reason)

    def _rate_limited(
        self,
        decision: Decision,
        principal: Principal | None,
        b: _Bucket,
        whose: str,
        reason: str,
        asked_at: float,
        served: tuple[str, str] | None,
        *,
        model: tuple[str, str | None] | None = None,
        note: bool = True,
    ) -> ModelgateError:
        """The error for a rate limit's refusal, counted; noted in the memo when ``note``,
        under ``model`` (a (model, version); None: every model), as certain from
        ``asked_at`` (a reading of the memo's clock taken before the limiter's)."""
        self._refused(principal, reason)
        error = ModelgateError(
            ErrorKind.RATE_LIMITED,
            f"rate limit exceeded: the {whose} limit is {b.limit} requests per {b.window_s:g} s",
            retry_after=decision.retry_after_s,
            details=rate_limit_details(decision),
        )
        memo = self.memo
        if (
            memo is not None
            and principal is not None
            and note
            and not getattr(self.limiter, "degraded", False)  # an outage's fallback
        ):
            memo.remember(
                principal,
                error,
                reason,
                asked_at=asked_at,
                certain_s=decision.retry_after_s - b.window_s * _WINDOW_SLACK - _SLACK_S,
                reset_s=decision.reset_after_s,
                model=model,
                served=served,
            )
        return error

    def _note_quota(
        self,
        memo: RefusalMemo,
        principal: Principal,
        error: ModelgateError,
        reason: str,
        asked_at: float,
        served: tuple[str, str] | None,
    ) -> None:
        """Note a quota refusal when even one more unit would be refused: a rows quota
        with rows left admits a smaller request. The error's ``retry_after`` is the time
        until the period ends, raised to 1 s when less is left: then it is not the end,
        and nothing is noted."""
        quotas = self.quotas
        assert quotas is not None
        retry = error.retry_after
        if (
            error.details.get("remaining", 1) > 0
            or retry is None
            or retry <= 1.0
            or getattr(quotas.counter, "degraded", False)
        ):
            return
        memo.remember(
            principal,
            error,
            reason,
            asked_at=asked_at,
            certain_s=retry - _SLACK_S,
            reset_s=float(error.details.get("reset", retry)),
            served=served,
        )


def rate_limit_details(decision: Decision) -> dict[str, float]:
    """What the X-RateLimit-Limit / -Remaining / -Reset headers say."""
    return {
        "limit": decision.limit,
        "remaining": decision.remaining,
        "reset": decision.reset_after_s,
    }
