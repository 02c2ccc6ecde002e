"""Each request's own wait (its sojourn time) feeds the queueing-delay controller beside the
loop's lag (issue 15): either signal staying above target sheds, a sojourn verdict lapses
when requests stop, and a request past the wait bound is refused on its own. Manual clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.admission.overload import QueueDelay
from modelgate.testing import ManualClock

TARGET, INTERVAL = 0.05, 0.5


def controller(
    clock: ManualClock, counted: list[int | None], max_wait_s: float | None = None
) -> QueueDelay:
    return QueueDelay(
        target_s=TARGET,
        interval_s=INTERVAL,
        clock=clock,
        count=counted.append,
        max_wait_s=max_wait_s,
    )


def requests(
    delays: QueueDelay, clock: ManualClock, wait: float, seconds: float, lag: float
) -> None:
    """A request that waited ``wait`` every 10 ms, and a loop-lag sample of ``lag`` every 20 ms."""
    for step in range(round(seconds / 0.01)):
        clock.now += 0.01
        assert delays.sojourn(clock.now - wait) == pytest.approx(wait)
        if step % 2:
            delays.observe(lag)


def test_a_standing_queue_of_requests_sheds_while_the_loop_lag_is_low() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    requests(delays, clock, 0.2, INTERVAL - 0.05, lag=0.001)
    assert not delays.shedding  # not yet a whole interval
    requests(delays, clock, 0.2, 0.1, lag=0.001)
    assert delays.shedding
    assert delays.severe  # 0.2 s is over twice the target too
    assert delays.refuses(None)
    assert counted == [None]


def test_requests_served_in_time_stop_the_shedding() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    requests(delays, clock, 0.2, 2 * INTERVAL, lag=0.0)
    assert delays.shedding
    requests(delays, clock, 0.01, 0.01, lag=0.0)  # one request under target
    assert not delays.shedding


def test_the_lag_alone_still_sheds_without_requests() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    for _ in range(60):
        clock.now += 0.02
        delays.observe(0.1)
    assert delays.shedding


def test_a_sojourn_verdict_lapses_when_requests_stop() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    requests(delays, clock, 0.2, 2 * INTERVAL, lag=0.0)
    assert delays.shedding
    clock.now += INTERVAL + 0.01  # no request for an interval: no queue of them
    delays.observe(0.0)
    assert not delays.shedding
    assert delays.ready()


def test_a_request_past_the_wait_bound_is_refused_and_counted() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted, max_wait_s=1.0)
    assert not delays.too_late(delays.sojourn(clock.now - 0.5))
    assert counted == []
    assert delays.too_late(delays.sojourn(clock.now - 1.0))
    assert counted == [None]
    assert not delays.shedding  # one late request is no standing queue


def test_no_wait_bound_refuses_nothing() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    assert not delays.too_late(delays.sojourn(clock.now - 3600))
    assert counted == []


@given(
    waited=st.floats(min_value=0, max_value=60),
    max_wait_s=st.one_of(st.none(), st.floats(min_value=0.001, max_value=60)),
    lag=st.sampled_from([0.0, TARGET, 2 * TARGET]),
)
def test_an_unread_request_is_refused_only_when_no_caller_could_be_served(
    waited: float, max_wait_s: float | None, lag: float
) -> None:
    # the protocol's question, before the caller is known: refused while every request is
    # shed (the delay stayed past twice the target), or past the wait bound; counted if so
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted, max_wait_s=max_wait_s)
    for _ in range(60):  # the lag held for over an interval
        clock.now += 0.01
        delays.observe(lag)
    expected = delays.severe or (max_wait_s is not None and waited >= max_wait_s)
    assert delays.severe == (lag >= 2 * TARGET)
    assert delays.refuses_unread(waited) == expected
    assert counted == ([None] if expected else [])
