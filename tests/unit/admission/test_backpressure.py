"""Back-pressure on a flooding connection (core/admission/backpressure.py): memo refusals that
come before the previous one's Retry-After ran out are counted in a row per connection, each
past the burst is held for min(cap, Retry-After) less a random part (so that a flood's
connections, refused together, do not come back together), a client that waits as told starts again,
holds and counted connections are bounded, and a shutdown releases every hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from modelgate.boot.serving import build_backpressure
from modelgate.core.admission.backpressure import HOLD_SPREAD, RefusalBackpressure, counted_down
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.settings import Settings


def longest() -> float:
    """A draw that takes nothing off a hold: the hold is all of min(cap, Retry-After)."""
    return 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_past_the_burst_are_held_for_the_retry_after_up_to_the_cap() -> None:
    backpressure = RefusalBackpressure(burst=3, max_hold_s=2.0, clock=Clock(), draw=longest)
    holds = [backpressure.refused("a", 0.02) for _ in range(5)]
    assert holds == [0.0, 0.0, 0.0, 1.0, 1.0]  # a 20 ms Retry-After is told as 1 s
    assert backpressure.refused("a", 1.5) == 2.0
    assert backpressure.refused("a", 30.0) == 2.0  # capped
    assert backpressure.refused("b", 30.0) == 0.0  # another connection has its own count


def test_holds_are_drawn_between_half_and_all_of_the_retry_after() -> None:
    draws = iter([0.0, 0.5, 0.999])
    backpressure = RefusalBackpressure(
        burst=1, max_hold_s=2.0, clock=Clock(), draw=lambda: next(draws)
    )
    backpressure.refused("a", 0.02)
    holds = [backpressure.refused("a", 0.02) for _ in range(3)]
    assert holds[:2] == [1.0, 0.75]
    assert holds[2] == pytest.approx(0.5005)


def test_a_floods_connections_refused_together_are_not_held_alike() -> None:
    """The shipped draw: every hold within [half, all] of the Retry-After, and the
    connections of a flood refused in the same instant come back at different times."""
    backpressure = RefusalBackpressure(burst=1, clock=Clock())
    holds = []
    for connection in range(32):
        backpressure.refused(connection, 0.02)
        holds.append(backpressure.refused(connection, 0.02))
    assert all(hold is not None and 0.5 <= hold <= 1.0 for hold in holds)
    assert len(set(holds)) > 16


def test_without_spread_every_hold_is_the_whole_retry_after() -> None:
    backpressure = RefusalBackpressure(burst=1, spread=0.0, clock=Clock())
    backpressure.refused("a", 0.02)
    assert [backpressure.refused("a", 0.02) for _ in range(3)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="spread"):
        RefusalBackpressure(burst=1, spread=1.0)


def test_a_client_that_waits_as_told_starts_the_count_again() -> None:
    clock = Clock()
    backpressure = RefusalBackpressure(burst=2, clock=clock, draw=longest)
    for _ in range(2):
        assert backpressure.refused("a", 0.3) == 0.0  # told "Retry-After: 1"
    clock.now += 1.0  # it waited the second it was told
    assert backpressure.refused("a", 0.3) == 0.0
    assert backpressure.refused("a", 0.3) == 0.0
    assert backpressure.refused("a", 0.3) == 1.0
    clock.now += 1.5  # after a hold the client is told to wait from the answer on
    assert backpressure.refused("a", 0.3) == 1.0


def test_a_count_lasts_at_most_idle_s_and_is_then_dropped() -> None:
    clock = Clock()
    backpressure = RefusalBackpressure(burst=1, idle_s=10.0, clock=clock, draw=longest)
    backpressure.refused("a", 3600.0)  # a quota: "Retry-After: 3600"
    clock.now += 9.0
    assert backpressure.refused("a", 3600.0) == 1.0  # still in a row: held (capped)
    clock.now += 1.0 + 10.0
    backpressure.refused("b", 1.0)
    assert list(backpressure.connections) == ["b"]  # "a" was over: dropped
    assert backpressure.refused("a", 3600.0) == 0.0  # counted from 1 again


def test_the_least_recently_refused_connection_goes_first_when_the_table_is_full() -> None:
    backpressure = RefusalBackpressure(burst=1, max_connections=2, clock=Clock())
    backpressure.refused("a", 1.0)
    backpressure.refused("b", 1.0)
    backpressure.refused("a", 1.0)  # "a" is now the most recently refused
    backpressure.refused("c", 1.0)
    assert list(backpressure.connections) == ["a", "c"]


@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from([0.0, 0.5, 1.0, 2.0, 12.0])),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_a_hold_comes_exactly_past_burst_refusals_that_did_not_wait_as_told(
    events: list[tuple[str, float]], burst: int
) -> None:
    """Against a model: each event is a memo refusal on a connection after some seconds;
    Retry-After is 1 s (the cap 1 s, ``idle_s`` 10 s). A refusal is held iff more than
    ``burst`` came in a row on its connection, each before the previous one's answer plus
    1 s; the table keeps at most 3 connections, the least recently refused out first."""
    clock = Clock()
    backpressure = RefusalBackpressure(burst=burst, max_connections=3, clock=clock, draw=longest)
    row: dict[str, tuple[int, float]] = {}  # connection -> (count, counts until); by recency
    for connection, after in events:
        clock.now += after
        hold = backpressure.refused(connection, 0.5)
        count, until = row.pop(connection, (0, -1.0))
        count = count + 1 if clock.now < until else 1
        expected = 1.0 if count > burst else 0.0
        assert hold == expected
        while row and (clock.now >= next(iter(row.values()))[1] or len(row) == 3):
            del row[next(iter(row))]  # over, from the least recently refused; or full
        row[connection] = (count, clock.now + expected + 1.0)
        assert list(backpressure.connections) == list(row)


async def test_holds_are_bounded_and_a_release_answers_them_all_at_once() -> None:
    backpressure = RefusalBackpressure(
        burst=1, max_hold_s=60.0, max_held=2, clock=Clock(), draw=longest
    )
    backpressure.refused("a", 60.0)
    tasks = []
    for connection in ("a", "a"):
        hold = backpressure.refused(connection, 60.0)
        assert hold == 60.0
        tasks.append(asyncio.create_task(backpressure.hold(hold)))
    await asyncio.sleep(0)
    assert backpressure.held == 2
    assert backpressure.refused("a", 60.0) is None  # no hold free: answer and close
    backpressure.release()  # shutdown: nobody waits out a minute
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert backpressure.held == 0
    assert backpressure.refused("a", 60.0) is None  # and nothing is held any more


async def test_a_hold_waits_its_time() -> None:
    backpressure = RefusalBackpressure(burst=1, max_hold_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backpressure.hold(0.05)
    assert loop.time() - started >= 0.05 - 0.005  # a lower bound: the timer's resolution


def test_a_burst_of_zero_is_no_back_pressure_at_all() -> None:
    with pytest.raises(ValueError, match="burst"):
        RefusalBackpressure(burst=0)


def test_a_held_error_reads_as_it_would_when_answered() -> None:
    error = ModelgateError(
        ErrorKind.RATE_LIMITED,
        "rate limit",
        retry_after=30.0,
        details={"limit": 5, "remaining": 0, "reset": 1.5},
    )
    later = counted_down(error, 1.0)
    assert (later.kind, later.message, later.retry_after) == (error.kind, error.message, 29.0)
    assert later.details == {"limit": 5, "remaining": 0, "reset": 1.0}  # never under 1 s
    assert counted_down(error, 60.0).retry_after == 0.0


def test_the_servers_back_pressure_takes_its_spread_from_the_settings(tmp_path: Path) -> None:
    def built(**values: Any) -> RefusalBackpressure:
        made = build_backpressure(Settings(data_dir=tmp_path, **values))
        assert made is not None
        return made

    assert built().spread == HOLD_SPREAD
    exact = built(refusal_hold_spread=0.0)
    exact.refused("a", 0.02)
    assert [exact.refused("a", 0.02) for _ in range(10)][-1] == 1.0
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, refusal_hold_spread=1.0)
