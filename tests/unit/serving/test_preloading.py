"""The predictive warm pool: hour-of-week profiles from usage records, the plan of what to
load, and the real registry evicting the least likely needed first and loading predictive
models ahead of their traffic (usage history in the in-memory usage store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.admission.usage import UsageRecord
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.preloading import (
    ModelSlot,
    Preloader,
    RegistryWarmPool,
    plan_loads,
)
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry, RegistryPolicy
from modelgate.core.serving.statistics import VersionStats
from modelgate.core.serving.usage_profile import HourlyCount, UsageProfile, hour_of_week
from modelgate.storage.memory.usage import MemoryUsageStore
from modelgate.testing import MemoryRepository, RecordingPredictor

MONDAY = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday, 00:00 UTC
MB = 1024 * 1024


def test_the_hour_of_week_starts_on_monday_in_utc() -> None:
    assert hour_of_week(MONDAY) == 0
    assert hour_of_week(MONDAY + timedelta(days=6, hours=23, minutes=59)) == 167
    plus_one = MONDAY.astimezone(__import__("datetime").timezone(timedelta(hours=1)))
    assert hour_of_week(plus_one) == 0


def test_a_profile_is_the_mean_per_hour_of_week_and_need_spans_hours() -> None:
    counts = [
        HourlyCount(MONDAY + timedelta(hours=9), "m", 30),
        HourlyCount(MONDAY + timedelta(weeks=1, hours=9), "m", 10),
        HourlyCount(MONDAY + timedelta(weeks=1, hours=10), "m", 40),
    ]
    profile = UsageProfile.from_counts(counts, weeks=2)
    assert profile.expected("m", MONDAY + timedelta(weeks=5, hours=9, minutes=30)) == 20
    assert profile.expected("other", MONDAY) == 0
    # from 09:30 for an hour: half of 09:00's 20 and half of 10:00's 20
    need = profile.need("m", MONDAY + timedelta(hours=9, minutes=30), timedelta(hours=1))
    assert need == pytest.approx(20.0)


@given(
    sizes=st.lists(st.integers(1, 100), min_size=1, max_size=8),
    needs=st.lists(st.floats(0, 100), min_size=8, max_size=8),
    budget=st.integers(0, 400),
)
def test_a_plan_never_loads_past_the_budget_nor_a_less_needed_model_first(
    sizes: list[int], needs: list[float], budget: int
) -> None:
    slots = [ModelSlot(f"m{i}", "predictive", size, False) for i, size in enumerate(sizes)]
    need = {f"m{i}": needs[i] for i in range(len(sizes))}
    loads = plan_loads(slots, need.__getitem__, budget, min_need=0.5)
    assert sum(sizes[int(n[1:])] for n in loads) <= budget
    assert all(need[n] >= 0.5 for n in loads)
    assert [need[n] for n in loads] == sorted((need[n] for n in loads), reverse=True)


def test_a_plan_loads_only_predictive_models_and_leaves_room_for_always() -> None:
    slots = [
        ModelSlot("always", "always", 50, True),
        ModelSlot("busy-on-demand", "on-demand", 30, False),
        ModelSlot("busy-predictive", "predictive", 30, False),
        ModelSlot("quiet-predictive", "predictive", 10, False),
        ModelSlot("later", "predictive", 10, False),
    ]
    need = {"busy-on-demand": 50.0, "busy-predictive": 40.0, "quiet-predictive": 0.1}
    loads = plan_loads(slots, lambda n: need.get(n, 0.0), 100)
    # 50 for the always model, 30 for the on-demand one ranked first: 20 left
    assert loads == []
    loads = plan_loads(slots, lambda n: need.get(n, 0.0), 200)
    assert loads == ["busy-predictive"]  # the quiet one expects under min_need


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


def _models(spec: dict[str, tuple[str, int]]) -> dict[str, dict[int, dict[str, Any]]]:
    return {
        name: {1: {"warm": warm, "labels": {"size_mb": str(size)}}}
        for name, (warm, size) in spec.items()
    }


class Now:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def _history(traffic: dict[str, list[int]], weeks: int = 3) -> MemoryUsageStore:
    """Each model's requests at the given hours of the week, every week of the history."""
    store = MemoryUsageStore()
    records = []
    for week in range(weeks):
        for model, hours in traffic.items():
            for hour in hours:
                at = MONDAY - timedelta(weeks=weeks - week) + timedelta(hours=hour, minutes=5)
                records.append(
                    UsageRecord(at, "t", None, model, "1", "cpu", "ok", False, requests=20)
                )
    await store.append(records)
    return store


async def test_the_registry_evicts_the_least_likely_needed_not_the_least_recent() -> None:
    now = Now(MONDAY + timedelta(hours=8, minutes=45))
    history = await _history({"office": [9, 10, 11], "nightly": [2, 3]})
    preloader = Preloader(history, budget_bytes=200 * MB, clock=now)
    await preloader.refresh()
    registry = ModelRegistry(
        MemoryRepository(
            _models(
                {
                    "office": ("on-demand", 100),
                    "nightly": ("on-demand", 100),
                    "x": ("on-demand", 100),
                }
            )
        ),
        {},
        builder=_builder,
        policy=RegistryPolicy(memory_budget_bytes=200 * MB),
        need=preloader.need,
    )
    await registry.acquire("nightly", None)  # least recent after this
    await registry.acquire("office", None)
    await registry.acquire("x", None)  # over the budget: one must go
    # LRU would evict "nightly"; office's 09:00 traffic is nearer than nightly's 02:00, and
    # x, just loaded for its request, stays
    assert registry.get("nightly", None) is None
    assert registry.get("office", None) is not None and registry.get("x", None) is not None


async def test_predictive_models_are_loaded_ahead_of_their_traffic() -> None:
    now = Now(MONDAY + timedelta(hours=8, minutes=45))
    history = await _history({"office": [9, 10, 11], "nightly": [2, 3], "demand": [9, 10]})
    preloader = Preloader(history, budget_bytes=200 * MB, clock=now)
    registry = ModelRegistry(
        MemoryRepository(
            _models(
                {
                    "office": ("predictive", 100),
                    "nightly": ("predictive", 100),
                    "demand": ("on-demand", 100),
                    "pinned": ("always", 50),
                }
            )
        ),
        {},
        builder=_builder,
        policy=RegistryPolicy(memory_budget_bytes=200 * MB),
        need=preloader.need,
    )
    await registry.start()
    assert registry.get("pinned", None) is not None
    pool = RegistryWarmPool(registry)
    # 08:45 on a Monday: the office model's traffic starts within the lookahead
    assert await preloader.tick(pool) == ["office"]
    assert registry.get("office", None) is not None
    assert registry.get("demand", None) is None  # on demand: its first request loads it
    assert registry.get("nightly", None) is None  # nothing expected before 02:00
    # 01:45 the next Monday: the nightly model is loaded, the office model makes room
    now.at = MONDAY + timedelta(weeks=1, hours=1, minutes=45)
    assert await preloader.tick(pool) == ["nightly"]
    assert registry.get("nightly", None) is not None
    assert registry.get("office", None) is None
    assert registry.get("pinned", None) is not None  # always warm: never evicted
    # a model unloaded through the repository API is not loaded again by the pool
    await registry.unload("nightly")
    assert await preloader.tick(pool) == []


def test_a_manifest_names_its_warm_policy() -> None:
    base = {
        "runtime": "python",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    }
    assert parse_manifest("m", base).warm == "on-demand"
    assert parse_manifest("m", {**base, "preload": True}).warm == "always"
    always = parse_manifest("m", {**base, "warm": "always"})
    assert always.preload  # pinned and loaded at start, like preload: true
    assert not parse_manifest("m", {**base, "warm": "predictive"}).preload
    with pytest.raises(Exception, match="warm"):
        parse_manifest("m", {**base, "warm": "sometimes"})
    with pytest.raises(Exception, match="preload"):
        parse_manifest("m", {**base, "preload": True, "warm": "on-demand"})
