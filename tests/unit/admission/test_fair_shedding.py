"""Fair shedding under queueing delay (issue 15): while the delay is over its target, the
tenant over its weighted share of recent admissions is shed and one under it is served;
shares decay, memory is bounded, and the shares add up."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.fairness import DEFAULT_WEIGHT, TenantShares, fair_weight
from modelgate.core.admission.overload import QueueDelay
from modelgate.testing import ManualClock

TARGET, INTERVAL = 0.05, 0.5


def tenant(name: str, rate: float | None = 50.0, priority: int = 0) -> Principal:
    plan = Plan(name=f"plan_{name}", requests_per_second=rate, priority=priority)
    return Principal(name, f"key_{name}", frozenset({"infer"}), plan)


def shedding(clock: ManualClock, delay: float = 1.5 * TARGET, **kwargs: object) -> QueueDelay:
    delays = QueueDelay(target_s=TARGET, interval_s=INTERVAL, clock=clock, **kwargs)  # type: ignore[arg-type]
    for _ in range(round(2 * INTERVAL / 0.02)):
        clock.now += 0.02
        delays.observe(delay)
    assert delays.shedding
    return delays


def test_the_heavy_tenant_is_shed_and_the_one_within_its_share_is_served() -> None:
    clock = ManualClock(100.0)
    shed_tenants: list[str] = []
    delays = shedding(clock, count_tenant=shed_tenants.append)
    heavy, light = tenant("heavy"), tenant("light")
    for _ in range(100):
        delays.admitted(heavy)
    for _ in range(5):
        delays.admitted(light)
    assert delays.refuses(heavy)
    assert not delays.refuses(light)
    assert shed_tenants == ["heavy"]


def test_without_fair_share_everyone_below_the_top_tier_was_shed() -> None:
    """What the light tenant got before: the same as the flooder."""
    clock = ManualClock(100.0)
    delays = shedding(clock)
    delays.admitted(tenant("heavy"))
    assert not delays.refuses(tenant("light"))  # no admission yet: well under its share


def test_weights_come_from_the_plans_rates() -> None:
    clock = ManualClock(100.0)
    delays = shedding(clock)
    big, small = tenant("big", rate=500.0), tenant("small", rate=10.0)
    for _ in range(90):  # 90 of 100 admissions: under big's fair share of 500/510
        delays.admitted(big)
    for _ in range(10):  # 10 of 100: over small's fair share of 10/510
        delays.admitted(small)
    assert not delays.refuses(big)
    assert delays.refuses(small)
    assert fair_weight(Plan(name="free")) == DEFAULT_WEIGHT


def test_tenants_equally_over_and_a_lone_flooder_are_all_shed() -> None:
    clock = ManualClock(100.0)
    delays = shedding(clock)
    a, b = tenant("a"), tenant("b")
    for _ in range(10):
        delays.admitted(a)
        delays.admitted(b)
    assert delays.refuses(a) and delays.refuses(b)


def test_priority_still_comes_first() -> None:
    clock = ManualClock(100.0)
    delays = shedding(clock)
    top, low = tenant("top", priority=9), tenant("low")
    for _ in range(100):
        delays.admitted(top)
    delays.admitted(low)
    assert not delays.refuses(top)  # over its share, but the top tier is not shed
    assert not delays.refuses(low)  # under its share
    severe = shedding(ManualClock(100.0), delay=3 * TARGET)
    severe.admitted(top)
    assert severe.severe and severe.refuses(low) and severe.refuses(top)


def test_shares_decay_so_a_past_flood_is_forgiven() -> None:
    clock = ManualClock(100.0)
    delays = shedding(clock)
    old, new = tenant("old"), tenant("new")
    for _ in range(1000):
        delays.admitted(old)
    for _ in range(300):  # 15 s of samples, delay still high: 15 half-lives
        clock.now += 0.05
        delays.observe(1.5 * TARGET)
        delays.admitted(new)
    assert delays.refuses(new)  # the one admitted recently holds the larger share now
    assert not delays.refuses(old)


def test_memory_is_bounded_and_idle_tenants_are_forgotten() -> None:
    shares = TenantShares(half_life_s=1.0, max_tenants=100)
    shares.tick(0.0)
    for i in range(10_000):
        shares.add(f"t{i}", 1.0)
    assert len(shares) == 100
    assert not shares.under("t5000", 1.0)  # a newcomer to a full table cannot be told apart
    assert shares.under("t1", 1.0) is False  # 1 of 100 equal: at its share, not under
    shares.tick(5.0)  # five half-lives without admissions: idle
    assert len(shares) == 0
    assert shares.under("t5000", 1.0)


def test_the_unit_is_rebased_without_changing_the_shares() -> None:
    shares = TenantShares(half_life_s=1.0)
    shares_seen: list[dict[str, float]] = []
    for second in range(505):  # past 500 half-lives the unit is rebased
        shares.tick(float(second))
        shares.add("a", 1.0)
        for _ in range(3):
            shares.add("b", 1.0)
        shares_seen.append(shares.shares())
    assert shares.unit < 2.0**10
    for seen in shares_seen[1:]:
        assert math.isclose(seen["a"], 0.25) and math.isclose(seen["b"], 0.75)


def test_a_long_stall_forgets_the_past_without_overflowing() -> None:
    shares = TenantShares(half_life_s=0.01)
    shares.tick(0.0)
    shares.add("a", 1.0)
    shares.tick(30.0)  # 3,000 half-lives in one step: 2 ** 3000 is no float
    shares.add("b", 1.0)
    assert shares.unit == 1.0
    assert shares.under("a", 1.0) and not shares.under("b", 1.0)


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([1.0, 2.0, 50.0, 500.0])),
        min_size=1,
        max_size=200,
    ),
    st.lists(st.floats(0.0, 3.0), max_size=20),
)
def test_shares_add_up_and_someone_is_always_at_or_over_its_share(
    admissions: list[tuple[int, float]], steps: list[float]
) -> None:
    shares = TenantShares(half_life_s=1.0, max_tenants=4)
    now = 0.0
    shares.tick(now)
    weights: dict[str, float] = {}
    for i, (who, weight) in enumerate(admissions):
        name = f"t{who}"
        weight = weights.setdefault(name, weight)  # one plan per tenant
        shares.add(name, weight)
        if steps and i % 10 == 0:
            now += steps[(i // 10) % len(steps)]
            shares.tick(now)
    assert len(shares) <= 4
    current, fair = shares.shares(), shares.fair_shares()
    if not current:
        return
    assert set(current) == set(fair)
    total = sum(current.values())
    assert total == 0 or math.isclose(total, 1.0)
    assert math.isclose(sum(fair.values()), 1.0)
    for name in current:  # under its share exactly when its share is under its fair share
        assert shares.under(name, weights[name]) == (current[name] < fair[name] and total > 0)
    # the shares add up to the fair shares' total: not every tenant can be under
    assert total == 0 or not all(shares.under(name, weights[name]) for name in current)
