"""Each tenant's recent share of admissions, against its weighted fair share (issue 15).

Every admitted request is counted under its tenant (``Admission.admit``, only when
queue-delay shedding is configured). While the queueing-delay controller sheds
(:mod:`modelgate.core.admission.overload`), it admits a tenant's new request only while
the tenant's share of recent admissions is under its fair share, ``weight / sum of the
weights of the tenants admitted recently``: the tenant that took most is shed first, one
that stays within its share is still served, and tenants equally over it (or a lone
flooder) are all shed, so shedding keeps its grip on the delay.

"Recent" is an exponential decay with a half-life (1 s by default). Decaying every counter
at every request would be O(tenants); instead an admission adds ``unit = 2 ** (t /
half_life)`` (new admissions grow rather than old counts shrink) and only ratios are
compared, so counting and asking are O(1) and read no clock: :meth:`TenantShares.tick`,
called by the delay sampler's timer, moves the unit on and rebases it (every count
divided, O(tenants)) about once every 500 half-lives.

Memory is bounded: at most ``max_tenants`` are tracked. Tenants whose decayed count fell
under 1/16 (four half-lives since their last admission) are forgotten in a sweep, at most
once per half-life, on the timer; this also keeps idle tenants out of the sum of weights,
so the fair share is split among the tenants that are sending. A new tenant that finds the
table full is not counted, and while shedding is not admitted until a sweep makes room.
"""

from __future__ import annotations

import math

from modelgate.core.access.identity import Plan

__all__ = ["DEFAULT_WEIGHT", "TenantShares", "fair_weight"]

#: the weight of a plan without a rate (``requests_per_second`` unset): that of 1 req/s
DEFAULT_WEIGHT = 1.0

#: a decayed count under this is an idle tenant, forgotten at the next sweep
_IDLE = 1 / 16
#: rebase the unit before ``2 ** exponent`` nears a float's range
_REBASE_EXPONENT = 500.0


def fair_weight(plan: Plan) -> float:
    """A tenant's weight under saturation: its plan's rate, so that a tenant within its
    plan keeps its rate when the server cannot serve every plan at once."""
    rate = plan.requests_per_second
    return rate if rate is not None and rate > 0 else DEFAULT_WEIGHT


class TenantShares:
    """Decayed admission counts per tenant. :meth:`add` and :meth:`under` are O(1) and
    read no clock; :meth:`tick` (the delay sampler's timer, every 20 ms) moves time on."""

    def __init__(self, *, half_life_s: float = 1.0, max_tenants: int = 4096) -> None:
        if half_life_s <= 0 or max_tenants < 1:
            raise ValueError("half_life_s must be positive and max_tenants at least 1")
        self.half_life_s = half_life_s
        self.max_tenants = max_tenants
        #: what one admission adds now: ``2 ** ((now - epoch) / half_life)``
        self.unit = 1.0
        self._epoch: float | None = None
        self._counts: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self._total = 0.0
        self._weight_sum = 0.0
        self._swept = -math.inf

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, tenant: str, weight: float) -> None:
        """Count one admission of ``tenant`` (not counted when the table is full). A
        tracked tenant's weight is not compared here (the hot path): :meth:`under` does."""
        count = self._counts.get(tenant)
        if count is None:
            if len(self._counts) >= self.max_tenants:
                return
            count = 0.0
            self._weights[tenant] = weight
            self._weight_sum += weight
        unit = self.unit
        self._counts[tenant] = count + unit
        self._total += unit

    def under(self, tenant: str, weight: float) -> bool:
        """Whether ``tenant``'s share of recent admissions is under its weighted fair
        share. A tenant not tracked has had none: it is under, unless the table is full
        (then it cannot be told from a flood of new tenants, and is not)."""
        count = self._counts.get(tenant)
        if count is None:
            return len(self._counts) < self.max_tenants
        if self._weights[tenant] != weight:  # the plan changed
            self._weight_sum += weight - self._weights[tenant]
            self._weights[tenant] = weight
        # count / total < weight / weight_sum, without dividing
        return count * self._weight_sum < weight * self._total

    def tick(self, now: float) -> None:
        """Move the decay on to ``now``; forget idle tenants at most once per half-life."""
        if self._epoch is None:
            self._epoch = now
        exponent = (now - self._epoch) / self.half_life_s
        if exponent > _REBASE_EXPONENT:
            self._rebase(now, exponent)
            exponent = 0.0
        self.unit = 2.0**exponent
        if now - self._swept >= self.half_life_s:
            self._sweep(now)

    def shares(self) -> dict[str, float]:
        """Each tracked tenant's share of recent admissions (they add up to 1); for tests
        and diagnostics, O(tenants)."""
        if self._total <= 0:
            return dict.fromkeys(self._counts, 0.0)
        return {tenant: count / self._total for tenant, count in self._counts.items()}

    def fair_shares(self) -> dict[str, float]:
        """Each tracked tenant's weighted fair share (they add up to 1)."""
        if self._weight_sum <= 0:
            return {}
        return {tenant: w / self._weight_sum for tenant, w in self._weights.items()}

    def _rebase(self, now: float, exponent: float) -> None:
        """Divide every count by the unit ``2 ** exponent`` and restart the epoch at
        ``now``. Multiplying by ``2 ** -exponent`` cannot overflow: after a long stall
        (a stopped process, a tiny half-life) old counts underflow to 0, forgotten."""
        self._epoch = now
        scale = 2.0**-exponent
        self._counts = {tenant: count * scale for tenant, count in self._counts.items()}
        self._total = sum(self._counts.values())

    def _sweep(self, now: float) -> None:
        """Forget the idle tenants (their decayed count under :data:`_IDLE`)."""
        self._swept = now
        floor = _IDLE * self.unit
        idle = [tenant for tenant, count in self._counts.items() if count < floor]
        for tenant in idle:
            self._total -= self._counts.pop(tenant)
            self._weight_sum -= self._weights.pop(tenant)
        if not self._counts:  # no rounding left behind
            self._total = self._weight_sum = 0.0
