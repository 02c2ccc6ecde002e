"""When the learning loop starts by itself: the schedule, a drift alert, enough new labels,
and the cooldown after the last run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from modelgate.core.monitoring.predictions import LabelQuery
from modelgate.core.serving.learning_spec import LearningSpec
from modelgate.learning.runs import LearningService

START = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class _Labels:
    """A feedback store holding ``count`` labelled predictions (of ``tenants``, in turn, or
    of tenant ``acme``); the queries it was asked. Pages by ``after`` as the stores do."""

    count: int = 0
    queries: list[LabelQuery] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)

    async def labelled(self, query: LabelQuery) -> list[object]:
        self.queries.append(query)
        first = 0 if query.after is None else int(query.after[1][1:]) + 1
        items = []
        for index in range(first, min(self.count, first + query.limit)):
            tenant = self.tenants[index] if self.tenants else "acme"
            prediction = SimpleNamespace(created_at=START, id=f"p{index:09d}", row=0,
                                         tenant_id=tenant)  # fmt: skip
            items.append(SimpleNamespace(prediction=prediction))
        return items


@dataclass
class _Feedback:
    store: _Labels


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _service(
    tmp_path: Path, labels: _Labels, clock: _Clock, drifting: bool = False, registry: Any = None
) -> Any:
    return LearningService(
        repository=tmp_path,
        registry=registry,  # due() reads no model
        feedback=_Feedback(labels),  # type: ignore[arg-type]
        privacy=None,  # type: ignore[arg-type]
        deployments=None,  # type: ignore[arg-type]
        audit=None,  # type: ignore[arg-type]
        fairness=None,  # type: ignore[arg-type]
        python="python",
        drifting=lambda model: drifting,
        now=clock,
    )


def _spec(**triggers: Any) -> LearningSpec:
    return LearningSpec(trainer="pkg.mod:train", triggers=triggers)


def _last_run(tmp_path: Path, created: datetime, finished: datetime | None) -> None:
    folder = tmp_path / "m" / ".learning" / "run_20261201T000000_abcdef"
    folder.mkdir(parents=True)
    run = {
        "id": folder.name,
        "created_at": created.isoformat(),
        "finished_at": None if finished is None else finished.isoformat(),
    }
    (folder / "run.json").write_text(json.dumps(run))


async def test_no_trigger_set_never_starts(tmp_path: Path) -> None:
    clock = _Clock()
    service = _service(tmp_path, _Labels(10**6), clock, drifting=True)
    clock.now += timedelta(days=400)
    assert await service.triggers.due("m", _spec()) is None


async def test_the_schedule_counts_from_the_last_run(tmp_path: Path) -> None:
    clock = _Clock()
    service = _service(tmp_path, _Labels(), clock)
    spec = _spec(every_seconds=3600, cooldown_seconds=0)
    clock.now += timedelta(minutes=59)
    assert await service.triggers.due("m", spec) is None
    clock.now += timedelta(minutes=1)
    assert await service.triggers.due("m", spec) == "schedule"
    _last_run(tmp_path, clock.now, clock.now + timedelta(minutes=5))
    clock.now += timedelta(minutes=30)
    assert await service.triggers.due("m", spec) is None


async def test_labels_since_the_last_run_are_counted_up_to_the_threshold(tmp_path: Path) -> None:
    clock = _Clock()
    labels = _Labels(count=499)
    service = _service(tmp_path, labels, clock)
    spec = _spec(labels=500, cooldown_seconds=0)
    _last_run(tmp_path, START - timedelta(hours=2), START - timedelta(hours=1))
    assert await service.triggers.due("m", spec) is None
    labels.count = 500
    assert await service.triggers.due("m", spec) == "labels"
    query = labels.queries[-1]
    assert query.limit == 1000 and query.model == "m"
    assert query.since == START - timedelta(hours=2)  # predictions since the last run began


async def test_a_drift_alert_starts_a_run(tmp_path: Path) -> None:
    clock = _Clock()
    drifting = _service(tmp_path, _Labels(), clock, drifting=True).triggers
    assert await drifting.due("m", _spec(on_drift=True)) == "drift"
    steady = _service(tmp_path, _Labels(), clock, drifting=False).triggers
    assert await steady.due("m", _spec(on_drift=True)) is None


async def test_nothing_starts_within_the_cooldown(tmp_path: Path) -> None:
    clock = _Clock()
    service = _service(tmp_path, _Labels(10**6), clock, drifting=True)
    _last_run(tmp_path, START - timedelta(minutes=20), START - timedelta(minutes=10))
    spec = _spec(labels=1, on_drift=True, cooldown_seconds=3600)
    assert await service.triggers.due("m", spec) is None
    clock.now += timedelta(minutes=51)
    assert await service.triggers.due("m", spec) == "drift"


@dataclass
class _Rule:
    name: str
    metric: str


@dataclass
class _Alerts:
    rules: list[_Rule]
    firing: list[tuple[str, str]]


def test_a_model_drifts_when_one_of_its_drift_rules_fires() -> None:
    from modelgate.boot.learning import _drifting

    rules = [_Rule("drift", "feature_drift"), _Rule("slow", "latency_p99")]
    alerts: Any = _Alerts(rules, [("drift", "credit-risk"), ("slow", "other")])
    assert _drifting(alerts, "credit-risk") is True
    assert _drifting(alerts, "other") is False  # latency is not drift
    assert _drifting(alerts, "credit") is False
    assert _drifting(None, "credit-risk") is False


@dataclass
class _Version:
    version: int


class _Registry:
    """A registry serving ``loaded`` versions of a model whose repository holds ``on_disk``."""

    def __init__(self, loaded: list[int], on_disk: list[int]) -> None:
        self.loaded = loaded
        self.repository = _Repository(on_disk)
        self.on_disk = on_disk
        self.loads = 0

    def versions(self, model: str) -> list[Any]:
        return [_Version(v) for v in self.loaded]

    async def load(self, model: str) -> None:
        self.loads += 1
        self.loaded = list(self.on_disk)


class _Repository:
    def __init__(self, on_disk: list[int]) -> None:
        self.on_disk = on_disk

    def versions(self, model: str) -> list[Any]:
        return [_Version(v) for v in self.on_disk]


async def test_a_replica_reloads_a_version_another_replica_registered(tmp_path: Path) -> None:
    registry = _Registry(loaded=[1, 2], on_disk=[1, 2, 3])
    service = _service(tmp_path, _Labels(), _Clock(), registry=registry)
    assert await service.sync_versions("m") is True
    assert registry.loads == 1 and registry.loaded == [1, 2, 3]
    assert await service.sync_versions("m") is False  # in step now
    idle = _Registry(loaded=[], on_disk=[1, 2, 3])
    service = _service(tmp_path, _Labels(), _Clock(), registry=idle)
    assert await service.sync_versions("m") is False  # not loaded here: nothing to do
    assert idle.loads == 0


async def test_one_tenant_s_labels_count_for_its_share_only(tmp_path: Path) -> None:
    """A flooding tenant alone cannot reach the labels trigger while others send labels:
    its labels count for at most max_tenant_share of the threshold."""
    clock = _Clock()
    labels = _Labels(count=600, tenants=["flood"] * 590 + ["acme"] * 10)
    service = _service(tmp_path, labels, clock)
    spec = LearningSpec(
        trainer="pkg.mod:train",
        max_tenant_share=0.5,
        triggers={"labels": 100, "cooldown_seconds": 0},
    )
    _last_run(tmp_path, START - timedelta(hours=2), START - timedelta(hours=1))
    assert await service.triggers.due("m", spec) is None  # 50 (flood's share) + 10 < 100
    labels.count, labels.tenants = 100, ["flood"] * 50 + ["acme"] * 50
    assert await service.triggers.due("m", spec) == "labels"
    labels.count, labels.tenants = 100, []  # one tenant only: all its labels count
    assert await service.triggers.due("m", spec) == "labels"
