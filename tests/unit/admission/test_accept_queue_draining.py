"""The listener's accept queue as a signal of its own (issue 15): each new connection's first
request reports its wait since the kernel received it and how many connections queue
behind it (:meth:`QueueDelay.connected`). A queue that stands past the target for an
interval drains the controller: every inference request is refused, whatever its tier,
until a new connection is read in time. Requests on kept connections, read at once, cannot
hide it; a long wait with a short queue (the loop's, not the queue's) does not drain.
Manual clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.overload import ACCEPT_QUEUE_STANDING, QueueDelay
from modelgate.testing import ManualClock

TARGET, INTERVAL = 0.05, 0.5
LONG = ACCEPT_QUEUE_STANDING  # a queue that stands
SHORT = ACCEPT_QUEUE_STANDING - 1


#: a caller of the highest tier: shed below twice the target never, but while draining
TOP = Principal("t-top", "key_top", frozenset({"infer"}), Plan(name="top", priority=9))


def fresh() -> tuple[ManualClock, list[int | None]]:
    """A manual clock, and where the controller counts what it sheds (by priority)."""
    return ManualClock(100.0), []


def controller(
    clock: ManualClock,
    counted: list[int | None],
    *,
    max_wait_s: float | None = None,
    ready_after_s: float = 2.0,
) -> QueueDelay:
    return QueueDelay(
        target_s=TARGET,
        interval_s=INTERVAL,
        clock=clock,
        count=counted.append,
        gradual=True,
        max_wait_s=max_wait_s,
        ready_after_s=ready_after_s,
    )


def traffic(
    delays: QueueDelay, clock: ManualClock, seconds: float, accept: float, queued: int | None
) -> list[bool]:
    """Every 10 ms a new connection whose first request waited ``accept`` with ``queued``
    connections in the queue, and a request on a kept connection read at once; a loop-lag
    sample of 1 ms every 20 ms. Returns :meth:`QueueDelay.connected`'s answers."""
    answers = []
    for step in range(round(seconds / 0.01)):
        clock.now += 0.01
        answers.append(delays.connected(accept, queued))
        delays.sojourn(clock.now - 0.001)
        if step % 2:
            delays.observe(0.001)
    return answers


def test_a_standing_accept_queue_drains_though_kept_connections_are_read_at_once() -> None:
    clock, counted = fresh()
    delays = controller(clock, counted)
    answers = traffic(delays, clock, INTERVAL - 0.05, accept=3.0, queued=LONG)
    assert not any(answers) and not delays.draining  # shorter than an interval: absorbed
    answers = traffic(delays, clock, 0.1, accept=3.0, queued=LONG)
    assert answers[-1] and delays.draining
    assert delays.shedding and delays.severe
    assert delays.refuses_unread(0.0)  # a kept connection's request too, unread
    assert delays.refuses(TOP)  # and the highest tier, with its fraction still 0
    assert delays.fraction < 0.01
    assert counted == [None, 9]


def test_the_same_waits_in_the_sojourn_alone_would_be_hidden() -> None:
    """Why it is a signal apart: the sojourn's least sample is the kept connection's."""
    clock, counted = fresh()
    delays = controller(clock, counted)
    for step in range(round(2 * INTERVAL / 0.01)):
        clock.now += 0.01
        delays.sojourn(clock.now - 3.0)
        delays.sojourn(clock.now - 0.001)
        if step % 2:
            delays.observe(0.001)
    assert not delays.shedding


def test_long_waits_with_a_short_queue_are_the_loops_and_do_not_drain() -> None:
    clock, counted = fresh()
    delays = controller(clock, counted)
    assert not any(traffic(delays, clock, 3 * INTERVAL, accept=0.3, queued=SHORT))
    assert not delays.draining and not delays.shedding
    # unknown (not Linux): the waits alone decide
    assert traffic(delays, clock, 2 * INTERVAL, accept=0.3, queued=None)[-1]


def test_a_connection_read_in_time_ends_the_draining_at_once() -> None:
    clock, counted = fresh()
    delays = controller(clock, counted)
    traffic(delays, clock, 2 * INTERVAL, accept=0.2, queued=LONG)
    assert delays.draining
    clock.now += 0.001
    assert not delays.connected(0.01, LONG)  # read within the target: the queue is gone
    assert not delays.draining
    assert not delays.refuses(TOP)
    clock.now += 0.001
    assert not delays.connected(0.2, LONG)  # and a new run must last an interval again


def test_draining_lapses_when_no_connection_comes() -> None:
    clock, counted = fresh()
    delays = controller(clock, counted)
    traffic(delays, clock, 2 * INTERVAL, accept=0.2, queued=LONG)
    assert delays.draining
    for _ in range(round(2 * INTERVAL / 0.02)):  # then only kept connections, read at once
        clock.now += 0.02
        delays.sojourn(clock.now - 0.001)
        delays.observe(0.001)
    assert not delays.draining
    assert not delays.severe


def test_readiness_goes_once_draining_has_lasted() -> None:
    clock, counted = fresh()
    delays = controller(clock, counted, ready_after_s=0.3)
    traffic(delays, clock, INTERVAL + 0.1, accept=0.2, queued=LONG)
    assert delays.draining and delays.ready()
    traffic(delays, clock, 0.4, accept=0.2, queued=LONG)
    assert not delays.ready()


@given(waited=st.floats(min_value=0, max_value=10))
def test_a_connection_past_the_wait_bound_is_refused_on_its_own(waited: float) -> None:
    delays = controller(ManualClock(100.0), [], max_wait_s=1.0)
    assert delays.connected(waited, 0) == (waited >= 1.0)


@given(
    samples=st.lists(
        st.tuples(st.floats(min_value=0, max_value=10), st.integers(0, 4096)), max_size=80
    )
)
def test_waits_under_the_target_or_short_queues_never_drain(
    samples: list[tuple[float, int]],
) -> None:
    clock = ManualClock(100.0)
    delays = controller(clock, [])
    for waited, queued in samples:
        clock.now += 0.01
        if waited >= TARGET:
            queued = min(queued, SHORT)
        assert not delays.connected(waited, queued)
    assert not delays.draining
