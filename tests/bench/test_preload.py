"""bench/preload.py's replay: the predictive warm pool has fewer cold starts than LRU over
the generated week, and every preload it counts is a real registry load."""

from __future__ import annotations

from bench.preload import history_store, replay, week_of_traffic


async def test_the_predictive_pool_beats_lru_on_the_replayed_week() -> None:
    traffic = week_of_traffic(5)
    history = await history_store(5000, 3)
    common = {"budget_mb": 1000, "history": history, "interval_s": 600.0}
    lru = await replay(traffic, warm="on-demand", ranking=False, preload=False, **common)
    predictive = await replay(traffic, warm="predictive", ranking=True, preload=True, **common)
    assert lru.requests == predictive.requests == len(traffic) > 50_000
    assert lru.preloads == 0 < predictive.preloads
    assert predictive.cold_starts < lru.cold_starts
