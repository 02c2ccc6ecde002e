"""Usage metering and cost: what every inference used, aggregated, priced and reported.

Recording is :class:`modelgate.core.admission.metering.UsageRecorder`, which sums requests per UTC
minute and dimension and writes them in batches. This module holds what it writes (the
records and the store port), the price table, and the reports (:class:`UsageService`).

A record's *units* are its tokens when it has any (text models), its rows otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.serving.usage_profile import HourlyCount
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "GROUPS",
    "NOT_ADMITTED",
    "Price",
    "UsageQuery",
    "UsageRecord",
    "UsageRow",
    "UsageService",
    "UsageStore",
    "UsageTotals",
    "cost_of",
    "parse_group_by",
    "parse_instant",
    "price_for",
]

log = logging.getLogger("modelgate.usage")

#: what a report may group by, in the order the columns appear
GROUPS = ("day", "tenant", "key", "model", "version")
#: statuses of requests refused before they reached a model: they count for no quota
NOT_ADMITTED = frozenset({"rate_limited", "overloaded"})
_TARGET = re.compile(r"^(default|(model|hardware):[A-Za-z0-9][A-Za-z0-9._-]{0,127})$")


@dataclass(slots=True)
class UsageRecord:
    """One aggregate row: the sums of the requests of one group in one minute."""

    period_start: datetime
    tenant_id: str
    key_id: str | None
    model: str
    version: str | None
    hardware: str
    status: str
    cache_hit: bool
    requests: int = 0
    rows: int = 0
    tokens: int = 0
    #: rows explained (``parameters.explain``): a unit of their own, docs/explanations.md
    explanations: int = 0
    latency_ms_sum: float = 0.0
    latency_ms_max: float = 0.0
    compute_ms_sum: float = 0.0
    cost: float = 0.0

    def merge(self, other: UsageRecord) -> None:
        self.requests += other.requests
        self.rows += other.rows
        self.tokens += other.tokens
        self.explanations += other.explanations
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_ms_max = max(self.latency_ms_max, other.latency_ms_max)
        self.compute_ms_sum += other.compute_ms_sum


@dataclass(frozen=True, slots=True)
class Price:
    """``target`` is ``"model:<name>"``, ``"hardware:<class>"`` or ``"default"``."""

    target: str
    per_1k_units: float
    per_compute_second: float
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int
    rows: int
    tokens: int


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Records with ``since <= period_start < until``, filtered, summed per ``group_by``."""

    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    group_by: tuple[str, ...] = ("day",)

    @classmethod
    def parse(
        cls,
        *,
        tenant: str | None = None,
        key: str | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
        group_by: str = "day",
    ) -> UsageQuery:
        """A query from text, as the API and the CLI take it (INVALID_ARGUMENT if bad)."""
        return cls(
            tenant_id=tenant,
            key_id=key,
            model=model,
            since=parse_instant(since, "since") if since else None,
            until=parse_instant(until, "until") if until else None,
            group_by=parse_group_by(group_by),
        )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of a report; the columns not grouped by are ``None``."""

    day: str | None
    tenant_id: str | None
    key_id: str | None
    model: str | None
    version: str | None
    requests: int
    errors: int
    rows: int
    tokens: int
    #: rows explained (docs/explanations.md)
    explanations: int
    latency_ms_avg: float
    latency_ms_max: float
    compute_seconds: float
    cost: float


class UsageStore(Protocol):
    """Where usage records and prices live.

    Contract:

    - ``append`` writes every record in one transaction (all or none);
    - ``report`` sums the matching records per ``query.group_by`` (days are UTC
      ``YYYY-MM-DD``), ordered by the group columns in :data:`GROUPS` order, ``None``
      first, text by code point; ``errors`` sums the requests whose status is not ``ok``;
      ``latency_ms_avg`` is the latency sum over the request count. No records, no rows;
    - ``totals`` sums requests, rows and tokens of one tenant's records with
      ``period_start >= since`` whose status is not in :data:`NOT_ADMITTED`;
    - ``hourly`` sums requests per model and UTC hour over the records with
      ``period_start >= since`` (every status), for the predictive warm pool
      (:class:`~modelgate.core.serving.usage_profile.UsageHistory`);
    - ``set_price`` inserts or replaces the price of its target; ``list_prices`` returns
      them ordered by target; ``delete_price`` answers whether there was one.
    """

    async def append(self, records: Sequence[UsageRecord]) -> None: ...

    async def report(self, query: UsageQuery) -> list[UsageRow]: ...

    async def totals(self, tenant_id: str, since: datetime) -> UsageTotals: ...

    async def set_price(self, price: Price) -> None: ...

    async def list_prices(self) -> list[Price]: ...

    async def delete_price(self, target: str) -> bool: ...

    async def hourly(self, since: datetime) -> list[HourlyCount]: ...


#: the longest key id usage records hold (the column is 128 characters)
_KEY_ID_MAX = 120


def usage_key_id(principal: Principal | None) -> str | None:
    """What usage records as the key: the key id, or ``jwt:<subject>``, ``admin:...``."""
    if principal is None:
        return None
    if principal.kind == "key":
        return principal.subject
    who = f"{principal.kind}:{principal.subject}"
    if len(who) > _KEY_ID_MAX:  # a long JWT subject: a stable digest fits the column
        who = f"{principal.kind}:sha256:{hashlib.sha256(principal.subject.encode()).hexdigest()}"
    return who


def price_for(prices: Mapping[str, Price], model: str, hardware: str) -> Price | None:
    """The price that applies: the model's, else the hardware class's, else the default."""
    return (
        prices.get(f"model:{model}") or prices.get(f"hardware:{hardware}") or prices.get("default")
    )


def cost_of(price: Price | None, units: int, compute_ms: float) -> float:
    if price is None:
        return 0.0
    return units / 1000 * price.per_1k_units + compute_ms / 1000 * price.per_compute_second


def parse_instant(value: str, field: str) -> datetime:
    """An ISO 8601 date or datetime; one without a time zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise invalid(f"'{field}' is not an ISO 8601 date or datetime: {value!r}") from None
    return _utc(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed, field)


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise invalid(f"'{field}' must carry a time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC instant
        raise invalid(f"'{field}' is out of range in UTC") from None


def parse_group_by(value: str) -> tuple[str, ...]:
    """``"day,model"`` -> ``("day", "model")``; unknown names are INVALID_ARGUMENT."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    _check_groups(names)
    return names


def _check_groups(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise invalid(f"cannot group by {unknown}: choose from {', '.join(GROUPS)}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UsageService:
    """Usage reports and the price table, for the admin API and the CLI.

    A tenant's principal sees only its own tenant's usage: another tenant's id answers
    NOT_FOUND, exactly like an unknown one. Price changes are operators' and audited.
    """

    def __init__(
        self, store: UsageStore, audit: AuditLog, *, now: Callable[[], datetime] = _utc_now
    ) -> None:
        self.store = store
        self.audit = audit
        self._now = now

    async def report(self, principal: Principal, query: UsageQuery) -> list[UsageRow]:
        require_scope(principal, Scope.USAGE_READ)
        if not is_operator(principal):
            if query.tenant_id is None:
                query = replace(query, tenant_id=principal.tenant_id)
            elif query.tenant_id != principal.tenant_id:
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{query.tenant_id}'")
        _check_groups(query.group_by)
        query = replace(query, group_by=tuple(dict.fromkeys(query.group_by)))
        since = None if query.since is None else _utc(query.since, "since")
        until = None if query.until is None else _utc(query.until, "until")
        query = replace(query, since=since, until=until)
        if query.since is not None and query.until is not None and query.since >= query.until:
            raise invalid("'since' must be before 'until'")
        return await self.store.report(query)

    async def list_prices(self, principal: Principal) -> list[Price]:
        require_scope(principal, Scope.USAGE_READ)
        return await self.store.list_prices()

    async def set_price(
        self,
        principal: Principal,
        price_target: str,
        per_1k_units: float,
        per_compute_second: float,
        source_ip: str | None = None,
    ) -> Price:
        require_scope(principal, Scope.TENANTS_ADMIN)
        if not _TARGET.fullmatch(price_target):
            raise invalid("a price target is 'default', 'model:<name>' or 'hardware:<class>'")
        for name, rate in (
            ("per_1k_units", per_1k_units),
            ("per_compute_second", per_compute_second),
        ):
            if not math.isfinite(rate) or rate < 0:
                raise invalid(f"'{name}' must be a finite number, zero or more")
        before = await self._price(price_target)
        price = Price(price_target, float(per_1k_units), float(per_compute_second), self._now())
        await self.store.set_price(price)
        await self._audit(principal, "price.set", price_target, source_ip, before, _plain(price))
        return price

    async def delete_price(
        self, principal: Principal, target: str, source_ip: str | None = None
    ) -> None:
        require_scope(principal, Scope.TENANTS_ADMIN)
        before = await self._price(target)
        if not await self.store.delete_price(target):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown price '{target}'")
        await self._audit(principal, "price.delete", target, source_ip, before, None)

    async def _price(self, target: str) -> dict[str, Any] | None:
        found = next((p for p in await self.store.list_prices() if p.target == target), None)
        return None if found is None else _plain(found)

    async def _audit(
        self,
        principal: Principal,
        action: str,
        target: str,
        source_ip: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        await self.audit.append(
            AuditEntry(
                actor=actor_of(principal),
                action=action,
                target=f"price:{target}",
                at=self._now(),
                source_ip=source_ip,
                before=before,
                after=after,
            )
        )


def _plain(price: Price) -> dict[str, Any]:
    return {
        "target": price.target,
        "per_1k_units": price.per_1k_units,
        "per_compute_second": price.per_compute_second,
        "updated_at": price.updated_at.isoformat(),
    }
