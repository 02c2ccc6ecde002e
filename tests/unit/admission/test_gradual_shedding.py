"""The gradual law of the queueing-delay controller (issue 15): PIE's control law (RFC 8033)
with a manual clock and a scripted random draw; no timing asserts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.control_laws import pie_step
from modelgate.core.admission.overload import QueueDelay
from modelgate.testing import ManualClock

TARGET, INTERVAL, UPDATE = 0.05, 0.5, 0.015


class Draws:
    """A random draw that answers ``value`` (tests set it)."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.value


def gradual(clock: ManualClock, draw: Draws | None = None) -> QueueDelay:
    return QueueDelay(
        target_s=TARGET,
        interval_s=INTERVAL,
        clock=clock,
        gradual=True,
        update_s=UPDATE,
        draw=draw or Draws(),
    )


def feed(delays: QueueDelay, clock: ManualClock, delay: float, seconds: float) -> None:
    """Loop-lag samples of ``delay`` every 10 ms for ``seconds``."""
    for _ in range(round(seconds / 0.01)):
        clock.now += 0.01
        delays.observe(delay)


def tenant(priority: int = 0) -> Principal:
    return Principal("ten_1", "key_1", frozenset({"infer"}), Plan(name="p", priority=priority))


def test_a_burst_shorter_than_the_interval_sheds_nothing() -> None:
    clock = ManualClock(100.0)
    delays = gradual(clock)
    feed(delays, clock, 0.3, INTERVAL - 0.05)
    assert delays.fraction > 0  # the law has moved ...
    assert not delays.shedding  # ... but the burst allowance holds
    feed(delays, clock, 0.3, 0.1)
    assert delays.shedding


def test_the_fraction_rises_with_how_far_and_how_long_the_delay_stays_above() -> None:
    clock = ManualClock(100.0)
    near, far = gradual(clock), gradual(clock)
    seen: list[float] = []
    for _ in range(10):
        for _ in range(10):
            clock.now += 0.01
            near.observe(2 * TARGET)
            far.observe(10 * TARGET)
        seen.append(near.fraction)
        assert far.fraction >= near.fraction
    assert seen == sorted(seen) and 0 < seen[-1] < 1  # rising, not on/off
    assert far.fraction > seen[-1]


def test_it_sheds_that_fraction_of_requests() -> None:
    clock, draw = ManualClock(100.0), Draws()
    delays = gradual(clock, draw)
    delays.admitted(tenant())  # the only tenant admitted: it holds its whole share
    feed(delays, clock, 1.5 * TARGET, 2 * INTERVAL)
    assert delays.shedding and not delays.severe and 0 < delays.fraction < 1
    draw.value = delays.fraction + 0.01  # over the fraction: admitted
    assert not delays.refuses(tenant())
    draw.value = delays.fraction - 0.01  # under it: the ordinary rule (its whole share)
    assert delays.refuses(tenant())
    assert not delays.refuses(tenant(9))  # the top tier is not shed below twice the target


def test_it_decays_to_zero_once_the_delay_drops_and_absorbs_the_next_burst() -> None:
    clock = ManualClock(100.0)
    delays = gradual(clock)
    feed(delays, clock, 1.0, 3 * INTERVAL)
    assert delays.fraction == 1.0 and delays.severe
    feed(delays, clock, 0.0, 10.0)
    assert delays.fraction == 0.0 and not delays.shedding and not delays.severe
    assert delays.ready()
    feed(delays, clock, 0.3, INTERVAL - 0.05)  # a new burst: the allowance is back
    assert not delays.shedding


def test_the_early_path_sheds_unread_requests_only_when_severe() -> None:
    clock, draw = ManualClock(100.0), Draws(0.0)
    delays = gradual(clock, draw)
    feed(delays, clock, 1.5 * TARGET, 2 * INTERVAL)
    assert delays.shedding and not delays.severe
    assert not delays.refuses_unread(0.0)
    feed(delays, clock, 3 * TARGET, 2 * INTERVAL)
    assert delays.severe and delays.refuses_unread(0.0)
    draw.value = 0.999 if delays.fraction < 0.999 else 1.0
    assert delays.fraction == 1.0 or not delays.refuses_unread(0.0)


def test_the_on_off_law_never_draws() -> None:
    clock, draw = ManualClock(100.0), Draws()
    delays = QueueDelay(target_s=TARGET, interval_s=INTERVAL, clock=clock, draw=draw)
    feed(delays, clock, 3 * TARGET, 2 * INTERVAL)
    assert delays.fraction == 1.0 and delays.refuses(tenant(9)) and delays.refuses_unread(0.0)
    assert draw.calls == 0


def test_the_sojourn_and_model_queue_feed_the_law_too() -> None:
    clock = ManualClock(100.0)
    by_sojourn, by_queue = gradual(clock), gradual(clock)
    for _ in range(100):
        clock.now += 0.01
        by_sojourn.observe(0.0)
        by_queue.observe(0.0)
        by_sojourn.sojourn(clock.now - 0.3)
        by_queue.queued(0.3)
    assert by_sojourn.shedding and by_queue.shedding


delays_st = st.lists(
    st.tuples(st.floats(min_value=0.001, max_value=0.2), st.floats(min_value=0, max_value=5)),
    max_size=300,
)


@given(delays_st, st.floats(min_value=0.001, max_value=1.0))
def test_the_fraction_stays_in_0_1_and_decays_to_0_under_target(
    steps: list[tuple[float, float]], target: float
) -> None:
    clock = ManualClock(100.0)
    delays = QueueDelay(
        target_s=target, interval_s=INTERVAL, clock=clock, gradual=True, draw=Draws()
    )
    for step, delay in steps:
        clock.now += step
        delays.observe(delay)
        assert 0.0 <= delays.fraction <= 1.0
        assert not delays.shedding or delays.fraction > 0
    for _ in range(2000):  # 20 s under half the target
        clock.now += 0.01
        delays.observe(target / 4)
    assert delays.fraction == 0.0 and not delays.shedding


@given(
    st.floats(min_value=0, max_value=1),
    st.floats(min_value=0, max_value=10),
    st.floats(min_value=0, max_value=10),
    st.floats(min_value=0.001, max_value=1),
)
def test_one_step_stays_in_0_1(
    fraction: float, delay: float, previous: float, target: float
) -> None:
    assert 0.0 <= pie_step(fraction, delay, previous, target) <= 1.0
