"""Quotas: how many requests, rows or tokens a tenant may use per UTC day and month.

A plan may set any of ``requests_per_day``, ``requests_per_month``, ``rows_per_day``, ...,
``tokens_per_month``. Every request is charged against all that apply in **one** atomic call of
a :class:`~modelgate.core.admission.ports.QuotaCounter` (in memory for one process, one Lua
script in Redis for many replicas): when any counter would pass its limit, nothing is charged
and the request is refused (429, ``Retry-After`` = the time until the period ends).

- requests and rows are known before the model runs, so they are charged up front;
- tokens are only known after (the tokenizer counts them), so a request is admitted while
  the tenant's token counters are below their limits and its tokens are added afterwards.
  One request may thus pass a token quota by its own size; the next is refused.

Counters live in the counter's store. When one is missing (a first request, a restart of an
in-memory counter, an emptied Redis) it is seeded from the usage records (``UsageTotals``),
so restarting a process does not hand every tenant a fresh month. Usage records are written
every ``usage_flush_seconds``, so a seed can miss the last second or so of use. One look-up
of a tenant's totals per period start at a time: the requests of a first burst (a new
tenant, a restart, a new day) wait for that one instead of each querying the usage store
(which, on SQLite, runs them one after another).

Crossing 80% and 100% of a limit raises a :class:`QuotaAlert`. Counters are atomic, so
exactly one request sees each crossing, on whichever replica it ran: each alert is sent once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.access.ports import IdentityStore
from modelgate.core.admission.ports import QuotaCharge, QuotaCounter, QuotaResult
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "ALERT_THRESHOLDS",
    "QuotaAlert",
    "QuotaUsage",
    "Quotas",
    "period_bounds",
]

log = logging.getLogger("modelgate.quotas")

UNITS = ("requests", "rows", "tokens")
PERIODS = ("day", "month")
#: shares of a limit whose crossing raises an alert
ALERT_THRESHOLDS = (0.8, 1.0)
#: counters outlive their period by this much, so a late charge still finds its counter
_GRACE = timedelta(days=1)
#: the plan's quota fields
_LIMITS = tuple(f"{unit}_per_{period}" for unit in UNITS for period in PERIODS)


@dataclass(frozen=True, slots=True)
class QuotaAlert:
    tenant_id: str
    unit: str  # requests | rows | tokens
    period: str  # day | month
    period_start: datetime
    limit: int
    used: int
    threshold: float  # 0.8 or 1.0


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """One quota of a tenant and how much of it is used, for reports."""

    unit: str
    period: str
    limit: int
    used: int
    resets_at: datetime


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month holding ``now``: (start, end)."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else (start.replace(month=start.month + 1))
    )
    return start, end


@dataclass(frozen=True, slots=True)
class _Quota:
    unit: str
    period: str
    limit: int
    start: datetime
    end: datetime
    key: str
    #: when its counter may expire (the end and a grace), as a POSIX timestamp
    expires_ts: float
    #: (threshold, the count whose reaching raises its alert), per alert threshold
    marks: tuple[tuple[float, int], ...]
    #: the position of its unit in ``UNITS``, where its amount is in a request's amounts
    unit_at: int
    #: the lowest of its marks: a count below it has crossed none
    first_mark: int


Totals = Callable[[str, datetime], Awaitable[tuple[int, int, int]]]
AlertSink = Callable[[QuotaAlert], None]


class Quotas:
    """Charges requests against their tenant's quotas.

    ``totals(tenant_id, since)`` answers (requests, rows, tokens) recorded since a time, to
    seed missing counters; ``alert`` receives each threshold crossing (it must not block).
    """

    def __init__(
        self,
        counter: QuotaCounter,
        *,
        totals: Totals | None = None,
        alert: AlertSink | None = None,
        now: Callable[[], datetime] | None = None,
    ):
        self.counter = counter
        self._totals = totals
        self._alert = alert
        self._now = now if now is not None else _utc_now
        #: the same clock as a POSIX timestamp: what a request reads (no datetime per request)
        self._now_ts = time.time if now is None else (lambda: now().timestamp())
        self._pending: set[asyncio.Task[None]] = set()
        #: (tenant, units) -> the plan they were built for, when their periods next roll
        #: over (a POSIX timestamp), and the quotas: the bounds and counter keys change once a
        #: UTC day, not per request; the plan is compared by identity first (a principal's
        #: plan is one object while its key is cached), never hashed per request
        self._built: dict[tuple[str, tuple[str, ...]], tuple[Plan, float, tuple[_Quota, ...]]]
        self._built = {}
        #: (tenant, period start) -> the totals look-up under way (single-flight seeds)
        self._seeding: dict[tuple[str, datetime], asyncio.Future[tuple[int, int, int]]] = {}

    @staticmethod
    def applies(plan: Plan) -> bool:
        return any(getattr(plan, limit) is not None for limit in _LIMITS)

    def _plan_quotas(
        self, tenant_id: str, plan: Plan, units: tuple[str, ...], now_ts: float
    ) -> tuple[_Quota, ...]:
        key = (tenant_id, units)
        built = self._built.get(key)
        if built is not None and now_ts < built[1]:
            if built[0] is plan:
                return built[2]
            if built[0] == plan:  # the same plan in a new object (a refreshed key entry):
                # kept under the new one, so the next requests compare by identity again
                self._built[key] = (plan, built[1], built[2])
                return built[2]
        now = datetime.fromtimestamp(now_ts, UTC)
        quotas = self._build_quotas(tenant_id, plan, units, now)
        if len(self._built) >= 10_000:  # bounded: tenants and plans come and go
            self._built.clear()
        rollover = min(period_bounds(period, now)[1] for period in PERIODS)
        self._built[key] = (plan, rollover.timestamp(), quotas)
        return quotas

    @staticmethod
    def _build_quotas(
        tenant_id: str, plan: Plan, units: tuple[str, ...], now: datetime
    ) -> tuple[_Quota, ...]:
        quotas = []
        for period in PERIODS:
            start, end = period_bounds(period, now)
            stamp = start.strftime("%Y%m%d" if period == "day" else "%Y%m")
            for unit in units:
                limit = getattr(plan, f"{unit}_per_{period}")
                if limit is not None:
                    key = f"quota:{tenant_id}:{unit}:{period[0]}{stamp}"
                    expires = (end + _GRACE).timestamp()
                    marks = tuple((t, math.ceil(int(limit) * t)) for t in ALERT_THRESHOLDS)
                    first = min(mark for _, mark in marks)
                    at = UNITS.index(unit)
                    quota = _Quota(
                        unit, period, int(limit), start, end, key, expires, marks, at, first
                    )
                    quotas.append(quota)
        return tuple(quotas)

    async def admit(self, principal: Principal, rows: int) -> None:
        """Charge one request and its rows; check the tokens left. RATE_LIMITED if over."""
        now_ts = self._now_ts()
        tenant_id = principal.tenant_id
        quotas = self._plan_quotas(tenant_id, principal.plan, UNITS, now_ts)
        if not quotas:
            return
        amounts = (1, rows, 0)  # requests, rows, tokens (in the order of UNITS)
        charges = _charges(quotas, amounts, now_ts, enforce=True)
        # an in-process counter answers without a coroutine (read per request: a test may
        # swap the counter)
        charge_now = getattr(self.counter, "charge_now", None)
        if charge_now is not None:
            result = charge_now(charges)
        else:
            result = await self.counter.charge(charges)
        if result is None:
            result = await self._charge_seeded(tenant_id, quotas, amounts, now_ts, enforce=True)
        if not result.allowed:
            assert result.refused is not None
            quota = quotas[result.refused]
            retry = max((quota.end - self._now()).total_seconds(), 1.0)
            raise ModelgateError(
                ErrorKind.RATE_LIMITED,
                f"quota exceeded: the plan allows {quota.limit} {quota.unit} per "
                f"{quota.period} (UTC); it resets at {quota.end.isoformat()}",
                retry_after=retry,
                details={
                    "limit": quota.limit,
                    "remaining": max(quota.limit - result.used[result.refused], 0),
                    "reset": retry,
                    "quota": f"{quota.unit}_per_{quota.period}",
                },
            )
        if self._alert is not None:
            used = result.used
            for i, quota in enumerate(quotas):  # a count below a quota's first mark crossed none
                if used[i] >= quota.first_mark:
                    self._alerts(tenant_id, quotas, amounts, used)
                    break

    def add_tokens(self, principal: Principal, tokens: int) -> None:
        """Add the tokens a request used, after the fact, off the request's path."""
        if tokens <= 0:
            return
        now_ts = self._now_ts()
        quotas = self._plan_quotas(principal.tenant_id, principal.plan, ("tokens",), now_ts)
        if not quotas:
            return
        task = asyncio.get_running_loop().create_task(
            self._add_tokens(principal, quotas, tokens, now_ts)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _add_tokens(
        self, principal: Principal, quotas: Sequence[_Quota], tokens: int, now_ts: float
    ) -> None:
        amounts = (0, 0, tokens)
        try:
            result = await self._charge(principal.tenant_id, quotas, amounts, now_ts, enforce=False)
        except ModelgateError as exc:
            log.warning(
                "could not add %d tokens of tenant %s: %s", tokens, principal.tenant_id, exc
            )
            return
        self._alerts(principal.tenant_id, quotas, amounts, result.used)

    async def usage(self, principal: Principal) -> list[QuotaUsage]:
        """Every quota of the principal's plan with what is used of it now."""
        return await self.usage_of(principal.tenant_id, principal.plan)

    async def report(
        self, principal: Principal, tenant_id: str, store: IdentityStore
    ) -> list[QuotaUsage]:
        """The quotas of ``tenant_id`` for ``principal``: ``usage:read`` on its own tenant,
        or an operator; another tenant's id answers like a missing one."""
        require_scope(principal, Scope.USAGE_READ)
        operator = is_operator(principal)
        tenant = (
            await store.get_tenant(tenant_id)
            if operator or (principal.tenant_id == tenant_id)
            else None
        )
        plan = await store.get_plan(tenant.plan) if tenant is not None else None
        if tenant is None or plan is None:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")
        return await self.usage_of(tenant.id, plan)

    async def usage_of(self, tenant_id: str, plan: Plan) -> list[QuotaUsage]:
        """Every quota of ``plan`` with what ``tenant_id`` has used of it now."""
        now_ts = self._now_ts()
        quotas = self._plan_quotas(tenant_id, plan, UNITS, now_ts)
        if not quotas:
            return []
        result = await self._charge(tenant_id, quotas, (0, 0, 0), now_ts, enforce=False)
        return [
            QuotaUsage(q.unit, q.period, q.limit, used, q.end)
            for q, used in zip(quotas, result.used, strict=True)
        ]

    async def _charge(
        self,
        tenant_id: str,
        quotas: Sequence[_Quota],
        amounts: tuple[int, int, int],
        now_ts: float,
        *,
        enforce: bool,
    ) -> QuotaResult:
        result = await self.counter.charge(_charges(quotas, amounts, now_ts, enforce=enforce))
        if result is None:
            result = await self._charge_seeded(tenant_id, quotas, amounts, now_ts, enforce=enforce)
        return result

    async def _charge_seeded(
        self,
        tenant_id: str,
        quotas: Sequence[_Quota],
        amounts: tuple[int, int, int],
        now_ts: float,
        *,
        enforce: bool,
    ) -> QuotaResult:
        """The charge again, with the seeds of the counters the counter did not hold."""
        seeds = await self._seeds(tenant_id, quotas)
        result = await self.counter.charge(_charges(quotas, amounts, now_ts, enforce, seeds))
        assert result is not None, "a counter with seeds always answers"
        return result

    async def _seeds(self, tenant_id: str, quotas: Sequence[_Quota]) -> list[int]:
        if self._totals is None:
            return [0] * len(quotas)
        found: dict[datetime, tuple[int, int, int]] = {}
        for q in quotas:
            if q.start not in found:
                found[q.start] = await self._total(self._totals, tenant_id, q.start)
        return [found[q.start][UNITS.index(q.unit)] for q in quotas]

    async def _total(self, totals: Totals, tenant_id: str, start: datetime) -> tuple[int, int, int]:
        """``totals(tenant_id, start)``, one look-up at a time for each: a caller that goes
        away does not cancel it for the others."""
        key = (tenant_id, start)
        looking = self._seeding.get(key)
        if looking is None:
            looking = self._seeding[key] = asyncio.ensure_future(totals(tenant_id, start))
            looking.add_done_callback(lambda done: self._seeded(key, done))
        return await asyncio.shield(looking)

    def _seeded(
        self, key: tuple[str, datetime], done: asyncio.Future[tuple[int, int, int]]
    ) -> None:
        if self._seeding.get(key) is done:
            del self._seeding[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter got it, or none was left to

    def _alerts(
        self,
        tenant_id: str,
        quotas: Sequence[_Quota],
        amounts: tuple[int, int, int],
        used: Sequence[int],
    ) -> None:
        if self._alert is None:
            return
        for quota, after in zip(quotas, used, strict=True):
            amount = amounts[quota.unit_at]
            if not amount or after < quota.first_mark:  # nothing added, or nothing crossed
                continue
            before = after - amount
            for threshold, mark in quota.marks:
                if before < mark <= after:
                    alert = QuotaAlert(
                        tenant_id, quota.unit, quota.period, quota.start, quota.limit, after,
                        threshold,
                    )  # fmt: skip
                    try:
                        self._alert(alert)
                    except Exception:  # an alert must never fail a request
                        log.exception("quota alert failed")

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        await self.counter.close()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _charges(
    quotas: Sequence[_Quota],
    amounts: tuple[int, int, int],
    now_ts: float,
    enforce: bool,
    seeds: Sequence[int] | None = None,
) -> list[QuotaCharge]:
    """One charge per quota: its unit's amount, with its limit when ``enforce``."""
    if seeds is None and enforce:  # a request's charge: the hot path, nothing to choose
        return [
            QuotaCharge(q.key, amounts[q.unit_at], q.limit, q.expires_ts - now_ts) for q in quotas
        ]
    return [
        QuotaCharge(
            q.key,
            amounts[q.unit_at],
            q.limit if enforce else None,
            q.expires_ts - now_ts,
            seeds[i] if seeds is not None else None,
        )
        for i, q in enumerate(quotas)
    ]
