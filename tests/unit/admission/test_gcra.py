"""The GCRA arithmetic's shortcut for an admitted hit gives the very decision the general
one does, and the in-memory limiter, which inlines the admission test, agrees with
``gcra.admit`` on every hit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelgate.limits import gcra
from modelgate.storage.memory.rate_limits import MemoryRateLimiter

limits = st.integers(1, 10**7)
windows = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


@given(limit=limits, window_s=windows, share=st.floats(0.0, 1.0), cost=st.integers(0, 10))
def test_allowed_is_decide_of_an_admitted_hit(
    limit: int, window_s: float, share: float, cost: int
) -> None:
    backlog_s = window_s * share
    assert gcra.allowed(backlog_s, limit, window_s) == gcra.decide(
        allowed=True, backlog_s=backlog_s, limit=limit, window_s=window_s, cost=cost
    )


class Ticks:
    def __init__(self) -> None:
        self.now = 10**15

    def __call__(self) -> int:
        return self.now


@given(
    limit=st.integers(1, 50),
    window_s=st.floats(1e-3, 10.0),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400_000_000)), max_size=80),
)
async def test_the_memory_limiter_admits_as_gcra_admit(
    limit: int, window_s: float, steps: list[tuple[int, int]]
) -> None:
    clock = Ticks()
    limiter = MemoryRateLimiter(clock_ns=clock)
    tat: tuple[int, float] | None = None  # the model's TAT, kept as the limiter keeps it
    window_ns = window_s * 1e9
    for cost, gap in steps:
        cost = min(cost, limit)
        clock.now += gap
        backlog = 0.0 if tat is None else gcra.backlog_of(*tat, clock.now)
        after = gcra.admit(backlog, limit, window_ns, cost)
        decision = await limiter.hit("k", limit, window_s, cost)
        assert decision.allowed is (after is not None)
        if after is not None:
            tat = gcra.split_tat(clock.now, after)
            assert decision == gcra.decide(
                allowed=True, backlog_s=after / 1e9, limit=limit, window_s=window_s, cost=cost
            )
