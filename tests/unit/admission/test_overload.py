"""The queueing-delay controller (issue 15): CoDel's rule with a manual clock, priority
tiers, readiness, and a reference definition checked over random delay sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.overload import QueueDelay
from modelgate.errors import ErrorKind
from modelgate.testing import ManualClock

TARGET, INTERVAL = 0.05, 0.5


def controller(clock: ManualClock, counted: list[int | None] | None = None) -> QueueDelay:
    return QueueDelay(
        target_s=TARGET,
        interval_s=INTERVAL,
        ready_after_s=2.0,
        clock=clock,
        count=counted.append if counted is not None else None,
    )


def feed(
    delays: QueueDelay, clock: ManualClock, delay: float, seconds: float, step: float = 0.01
) -> None:
    """Samples of ``delay`` every ``step`` for ``seconds``."""
    for _ in range(round(seconds / step)):
        clock.now += step
        delays.observe(delay)


def principal(priority: int, tenant: str = "ten_1") -> Principal:
    plan = Plan(name=f"p{priority}", priority=priority)
    return Principal(tenant, "key_1", frozenset({"infer"}), plan)


def test_it_sheds_only_after_a_whole_interval_above_target() -> None:
    clock = ManualClock(100.0)
    delays = controller(clock)
    delays.observe(0.2)  # the first sample above target starts the interval
    feed(delays, clock, 0.2, INTERVAL - 0.02)
    assert not delays.shedding
    feed(delays, clock, 0.2, 0.02)
    assert delays.shedding


def test_a_short_burst_is_absorbed() -> None:
    clock = ManualClock(100.0)
    delays = controller(clock)
    for _ in range(10):
        feed(delays, clock, 1.0, INTERVAL / 2)
        feed(delays, clock, 0.0, 0.01)  # one sample under target: that interval's minimum
    assert not delays.shedding


def test_it_stops_as_soon_as_a_sample_drops_under_target() -> None:
    clock = ManualClock(100.0)
    delays = controller(clock)
    feed(delays, clock, 0.2, 2 * INTERVAL)
    assert delays.shedding
    clock.now += 0.01
    delays.observe(TARGET / 2)
    assert not delays.shedding and not delays.severe


def test_lower_tiers_are_shed_first_and_everyone_above_twice_the_target() -> None:
    clock, counted = ManualClock(100.0), list[int | None]()
    delays = controller(clock, counted)
    delays.admitted(principal(0))  # the only tenant admitted: it holds its whole share
    feed(delays, clock, 1.5 * TARGET, 2 * INTERVAL)
    assert delays.shedding and not delays.severe
    assert delays.refuses(principal(0)) and delays.refuses(principal(8))
    assert not delays.refuses(principal(9))
    assert not delays.refuses(principal(0, ADMIN_TENANT))
    assert delays.refuses(None)  # no plans: no tier to protect
    feed(delays, clock, 3 * TARGET, 2 * INTERVAL)
    assert delays.severe and delays.refuses(principal(9))
    assert counted == [0, 8, None, 9]


def test_its_error_is_a_503_with_retry_after() -> None:
    error = controller(ManualClock(100.0)).error()
    assert error.kind is ErrorKind.OVERLOADED and error.retry_after == 1.0


def test_readiness_goes_after_shedding_lasts_and_comes_back_when_it_stops() -> None:
    clock = ManualClock(100.0)
    delays = controller(clock)
    feed(delays, clock, 0.2, INTERVAL + 0.01)
    assert delays.shedding and delays.ready()  # shedding, not yet for long
    feed(delays, clock, 0.2, 2.0)
    assert not delays.ready()
    clock.now += 0.01
    delays.observe(0.0)
    assert delays.ready()


def reference(samples: list[tuple[float, float]], i: int, threshold: float) -> bool:
    """CoDel's rule, by definition: sample ``i`` and every sample back to one taken at
    least ``INTERVAL`` before it are at or above ``threshold``."""
    if samples[i][1] < threshold:
        return False
    now = samples[i][0]
    for at, delay in reversed(samples[: i + 1]):
        if delay < threshold:
            return False
        if now - at >= INTERVAL:
            return True
    return False


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.001, max_value=0.3),
            st.sampled_from([0.0, 0.03, 0.05, 0.07, 0.1, 0.12, 0.5]),
        ),
        max_size=200,
    )
)
def test_it_agrees_with_the_reference_definition(steps: list[tuple[float, float]]) -> None:
    clock = ManualClock(100.0)
    delays = controller(clock)
    samples: list[tuple[float, float]] = []
    for step, delay in steps:
        clock.now += step
        delays.observe(delay)
        samples.append((clock.now, delay))
        i = len(samples) - 1
        assert delays.shedding == reference(samples, i, TARGET)
        assert delays.severe == reference(samples, i, 2 * TARGET)
