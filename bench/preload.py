"""Cold starts avoided by the predictive warm pool: a week of traffic replayed against the
real model registry, with a memory budget that cannot hold every model.

    .venv/bin/python -m bench.preload [--seed 13] [--budget-mb 1000] [--interval 60]

A simulation over the real policy code: :class:`~modelgate.core.serving.registry.ModelRegistry`
(its eviction), :class:`~modelgate.core.serving.preloading.Preloader` (profile, plan, loads)
and the in-memory usage store, on a simulated clock; a model's load is instant and its
"runtime" answers nothing (no model runs). The traffic is generated, seeded: eight models
with daily and weekly rhythms (office hours in two time zones, a nightly batch, a weekend
model, a Monday-morning report, a round-the-clock model with a daily cycle, a small rare
one), Poisson arrivals per minute at each hour's rate with a day-to-day wobble. Three weeks
of it are written to the usage store as history; a fourth, drawn with another seed, is
replayed. A cold start is a request that finds its model not loaded.

Rows: plain LRU (what the registry did before: least recently used evicted first, loads
on demand), the usage-history eviction ranking alone (every model ``on-demand``), and the
predictive pool (every model ``predictive``: ranking plus loading ahead).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelgate.core.admission.usage import UsageRecord
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.preloading import Preloader, RegistryWarmPool
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry, RegistryPolicy
from modelgate.core.serving.statistics import VersionStats
from modelgate.storage.memory.usage import MemoryUsageStore
from modelgate.testing import MemoryRepository, RecordingPredictor

MB = 1024 * 1024
WEEK_S = 7 * 24 * 3600
#: the Monday 00:00 UTC the replayed week starts at
START = datetime(2026, 11, 30, tzinfo=UTC)


def _office(start: int, end: int, peak: float) -> Callable[[int, int], float]:
    def rate(day: int, hour: int) -> float:
        if day >= 5 or not start <= hour < end:
            return 0.0
        return peak * math.sin(math.pi * (hour - start + 0.5) / (end - start))

    return rate


def _nightly(day: int, hour: int) -> float:
    return 900.0 if 1 <= hour < 4 else 0.0


def _weekend(day: int, hour: int) -> float:
    if day >= 5 and 10 <= hour < 22:
        return 300.0
    return 4.0 if 19 <= hour < 22 else 0.0


def _monday_reports(day: int, hour: int) -> float:
    return 250.0 if day == 0 and 6 <= hour < 9 else 0.0


def _always(day: int, hour: int) -> float:
    return 150 + 120 * math.sin(math.pi * hour / 24) ** 2


def _rare(day: int, hour: int) -> float:
    return 1.5


@dataclass(frozen=True)
class Model:
    name: str
    size_mb: int
    rate: Callable[[int, int], float]  # requests per hour at (weekday, hour), UTC


MODELS = (
    Model("credit-risk", 300, _office(8, 18, 600)),
    Model("eu-support", 250, _office(6, 14, 300)),
    Model("fraud", 200, _always),
    Model("nightly-batch", 400, _nightly),
    Model("weekend-recs", 350, _weekend),
    Model("weekly-reports", 300, _monday_reports),
    Model("search-embed", 250, _office(9, 17, 200)),
    Model("rare-audit", 100, _rare),
)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation, as exact sampling is slow for large means
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def week_of_traffic(seed: int) -> list[tuple[float, str]]:
    """(second of the week, model) of every request, in order."""
    rng = random.Random(seed)
    requests = []
    for day in range(7):
        wobble = {m.name: rng.uniform(0.7, 1.3) for m in MODELS}  # busier and quieter days
        for hour in range(24):
            for minute in range(60):
                at = (day * 24 + hour) * 3600 + minute * 60
                for model in MODELS:
                    n = _poisson(rng, model.rate(day, hour) * wobble[model.name] / 60)
                    requests.extend((at + rng.uniform(0, 60), model.name) for _ in range(n))
    requests.sort()
    return requests


async def history_store(seed: int, weeks: int) -> MemoryUsageStore:
    store = MemoryUsageStore()
    for week in range(weeks):
        counts: dict[tuple[int, str], int] = {}
        for second, model in week_of_traffic(seed + 1 + week):
            hour = int(second // 3600)
            counts[hour, model] = counts.get((hour, model), 0) + 1
        begin = START - timedelta(weeks=weeks - week)
        await store.append(
            [
                UsageRecord(
                    begin + timedelta(hours=hour), "t", None, model, "1", "cpu", "ok", False, n
                )
                for (hour, model), n in counts.items()
            ]
        )
    return store


def _builder(source: VersionSource) -> LoadedVersion:
    manifest = source.manifest
    return LoadedVersion(
        name=manifest.name,
        version=source.version,
        manifest=manifest,
        runtime=RecordingPredictor(),  # type: ignore[arg-type]
        stats=VersionStats(manifest.name, str(source.version), None),
        size_bytes=int(manifest.labels["size_mb"]) * MB,
        batched=False,
        offload=False,
    )


@dataclass
class Outcome:
    cold_starts: int
    preloads: int
    requests: int


async def replay(
    traffic: list[tuple[float, str]],
    *,
    warm: str,
    ranking: bool,
    preload: bool,
    budget_mb: int,
    history: MemoryUsageStore,
    interval_s: float,
) -> Outcome:
    now = [0.0]
    repository = MemoryRepository(
        {m.name: {1: {"warm": warm, "labels": {"size_mb": str(m.size_mb)}}} for m in MODELS}
    )
    preloader = Preloader(
        history, budget_bytes=budget_mb * MB, clock=lambda: START + timedelta(seconds=now[0])
    )
    registry = ModelRegistry(
        repository,
        {},
        builder=_builder,
        policy=RegistryPolicy(memory_budget_bytes=budget_mb * MB),
        clock=lambda: now[0],
        need=preloader.need if ranking else None,
    )
    await registry.start()
    await preloader.refresh()
    pool = RegistryWarmPool(registry)
    cold = preloads = 0
    next_tick = 0.0
    for second, model in traffic:
        while preload and next_tick <= second:
            now[0] = next_tick
            preloads += len(await preloader.tick(pool))
            next_tick += interval_s
        now[0] = second
        if registry.get(model, None) is None:
            cold += 1
            await registry.acquire(model, None)
    return Outcome(cold, preloads, len(traffic))


async def main(seed: int, budget_mb: int, interval_s: float, weeks: int) -> None:
    total = sum(m.size_mb for m in MODELS)
    traffic = week_of_traffic(seed)
    history = await history_store(seed * 1000, weeks)
    print(
        f"{len(MODELS)} models, {total} MB in all, budget {budget_mb} MB; "
        f"{len(traffic):,} requests in the replayed week (seed {seed}); "
        f"{weeks} weeks of history; preloader every {interval_s:g} s"
    )
    rows = [
        ("LRU (before)", "on-demand", False, False),
        ("usage ranking, on demand", "on-demand", True, False),
        ("predictive", "predictive", True, True),
    ]
    print(f"{'policy':<28}{'cold starts':>12}{'preloads':>10}{'cold %':>9}{'seconds':>9}")
    baseline = None
    for label, warm, ranking, preload in rows:
        started = time.perf_counter()
        outcome = await replay(
            traffic,
            warm=warm,
            ranking=ranking,
            preload=preload,
            budget_mb=budget_mb,
            history=history,
            interval_s=interval_s,
        )
        spent = time.perf_counter() - started
        baseline = baseline if baseline is not None else outcome.cold_starts
        share = 100 * outcome.cold_starts / outcome.requests
        print(
            f"{label:<28}{outcome.cold_starts:>12,}{outcome.preloads:>10,}"
            f"{share:>8.3f}%{spent:>9.1f}"
        )
    print(f"(cold starts avoided are measured against the first row, {baseline:,})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--budget-mb", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=60.0, help="preloader pass, seconds")
    parser.add_argument("--weeks", type=int, default=3, help="weeks of usage history")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.seed, arguments.budget_mb, arguments.interval, arguments.weeks))
