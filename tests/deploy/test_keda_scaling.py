"""The node pools' scaling, as the chart configures it, over a day of load.

KEDA and the Horizontal Pod Autoscaler it drives are reproduced here from their documented
rules (keda.sh "Scaling Deployments", the HPA's algorithm in the Kubernetes docs):

- KEDA polls each trigger every ``pollingInterval``; a trigger is *active* when its value
  is above its ``activationThreshold``. A target at zero goes to one replica when any
  trigger is active; one with no active trigger for ``cooldownPeriod`` goes to
  ``minReplicaCount`` (zero).
- Between one replica and ``maxReplicaCount`` the HPA decides: per metric, ``AverageValue``
  asks ``ceil(value / threshold)`` and ``Value`` asks ``ceil(replicas * value / threshold)``,
  each ignored when within 10% of the current count (its tolerance); the largest wins; a
  scale-down goes only to the largest count asked for over the last 300 s (its default
  stabilisation window).

The thresholds are read from the chart's rendered ScaledObjects, not restated. The metric
series are those a pool would report under a day of load: the offered load is a seeded,
generated day (night idle, a morning ramp, a midday peak, a spike, an evening tail;
SERIES below), and each poll's queue length, p95 latency and GPU utilisation follow from
it and the nodes up at that moment through a small queueing model of a node (a node holds
``CAPACITY`` requests at its base latency; beyond that, latency grows with its backlog).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm_chart import by_kind, helm, render  # noqa: F401 - the fixture

#: requests one node holds at its base latency
CAPACITY = 16
BASE_P95_S = 0.08
#: the HPA's tolerance and scale-down stabilisation window (Kubernetes' defaults)
TOLERANCE = 0.1
STABILISATION_S = 300
DAY_S = 24 * 3600


def offered_load(seed: int = 13) -> list[float]:
    """Requests in flight a pool is asked to hold, one value per minute of a day: a
    generated day (seeded), idle at night."""
    rng = random.Random(seed)
    series = []
    for minute in range(24 * 60):
        hour = minute / 60
        if hour < 6 or hour >= 23:
            load = 0.0  # nobody calls
        else:
            # a daily cycle peaking at 14:00, about 90 requests in flight at the top
            load = 90 * math.sin(math.pi * (hour - 6) / 17) ** 2
            load *= rng.uniform(0.85, 1.15)
        if 16 * 60 <= minute < 16 * 60 + 10:
            load += 120  # a ten-minute spike
        series.append(load)
    return series


SERIES = offered_load()


@dataclass(frozen=True)
class Trigger:
    name: str
    metric_type: str
    threshold: float
    activation: float


@dataclass(frozen=True)
class Scaling:
    minimum: int
    maximum: int
    polling_s: int
    cooldown_s: int
    triggers: tuple[Trigger, ...]

    @classmethod
    def of(cls, scaled_object: dict[str, Any]) -> Scaling:
        spec = scaled_object["spec"]
        return cls(
            spec.get("minReplicaCount", 0),
            spec.get("maxReplicaCount", 100),
            spec.get("pollingInterval", 30),
            spec.get("cooldownPeriod", 300),
            tuple(
                Trigger(
                    t["name"],
                    t.get("metricType", "AverageValue"),
                    float(t["metadata"]["threshold"]),
                    float(t["metadata"].get("activationThreshold", "0")),
                )
                for t in spec["triggers"]
            ),
        )


def signals(load: float, replicas: int, gpu_capacity: float | None) -> dict[str, float]:
    """What the queries would read: the queue (held by nodes, or waiting at the gateways
    when there is none), the p95 of the nodes (0 without traffic or nodes), and the GPUs'
    average utilisation (GPU pool)."""
    values = {"queue": load}
    if replicas == 0 or load == 0:
        values["p95-latency"] = 0.0
        values["gpu-utilization"] = 0.0
        return values
    per_node = load / replicas
    backlog = max(0.0, per_node - CAPACITY) / CAPACITY
    values["p95-latency"] = BASE_P95_S * (1 + 4 * backlog)
    if gpu_capacity is not None:
        values["gpu-utilization"] = min(100.0, 100 * per_node / gpu_capacity)
    return values


def hpa_desired(scaling: Scaling, replicas: int, values: dict[str, float]) -> int:
    wanted = []
    for trigger in scaling.triggers:
        value = values[trigger.name]
        if trigger.metric_type == "AverageValue":
            ratio = value / (trigger.threshold * replicas)
            want = math.ceil(value / trigger.threshold)
        else:
            ratio = value / trigger.threshold
            want = math.ceil(replicas * ratio)
        wanted.append(replicas if abs(ratio - 1) <= TOLERANCE else want)
    return max(max(wanted), 1)


def simulate(
    scaling: Scaling, load: Callable[[int], float], *, gpu_capacity: float | None = None
) -> list[tuple[int, float, int]]:
    """(second, load, replicas) at each poll over a day, starting at zero nodes."""
    replicas = 0
    last_active = -1e9
    recent: list[tuple[int, int]] = []  # (second, desired) for the stabilisation window
    trace = []
    for second in range(0, DAY_S, scaling.polling_s):
        offered = load(second)
        values = signals(offered, replicas, gpu_capacity)
        active = any(values[t.name] > t.activation for t in scaling.triggers)
        if active:
            last_active = second
        if replicas == 0:
            if active:
                replicas = max(1, scaling.minimum)
        elif not active and second - last_active >= scaling.cooldown_s and scaling.minimum == 0:
            replicas = 0
            recent.clear()
        else:
            desired = min(max(hpa_desired(scaling, replicas, values), 1), scaling.maximum)
            recent = [(s, d) for s, d in recent if second - s < STABILISATION_S]
            recent.append((second, desired))
            replicas = desired if desired >= replicas else max(d for _, d in recent)
        trace.append((second, offered, replicas))
    return trace


def per_minute(second: int) -> float:
    return SERIES[second // 60]


@pytest.fixture(scope="module")
def pools(helm: Path) -> dict[str, Scaling]:  # noqa: F811 - the imported fixture
    documents = render(
        helm, "--set", "node.gpu.enabled=true", "--set", "node.autoscaling.mode=keda"
    )
    return {
        d["metadata"]["name"].removeprefix("mg-node-"): Scaling.of(d)
        for d in by_kind(documents, "ScaledObject")
    }


def test_an_idle_pool_goes_to_zero_and_starts_on_the_first_request(
    pools: dict[str, Scaling],
) -> None:
    scaling = pools["cpu"]
    trace = simulate(scaling, per_minute)
    # at 05:00, after hours of nothing, the pool has no node
    assert all(r == 0 for s, _, r in trace if 2 * 3600 <= s < 6 * 3600)
    # the first poll that sees traffic starts a node
    first = next(i for i, (_, load, _) in enumerate(trace) if load > 0)
    assert trace[first][2] >= 1
    # and the pool never sits at zero while requests come
    assert all(r >= 1 for _, load, r in trace if load > 0)
    # after the evening tail, back to zero within the cooldown and a poll
    last = max(s for s, load, _ in trace if load > 0)
    after = [r for s, _, r in trace if s >= last + scaling.cooldown_s + 2 * scaling.polling_s]
    assert after and all(r == 0 for r in after)


def test_the_pool_grows_with_the_load_and_keeps_latency_near_its_target(
    pools: dict[str, Scaling],
) -> None:
    scaling = pools["cpu"]
    trace = simulate(scaling, per_minute)
    peak = max(r for *_, r in trace)
    assert 1 < peak <= scaling.maximum
    # at the midday plateau, enough nodes for the queue target (after the HPA caught up)
    settled = [
        (load, r)
        for s, load, r in trace
        if 13 * 3600 <= s < 15 * 3600 and load / CAPACITY <= scaling.maximum
    ]
    assert settled
    for load, replicas in settled:
        assert replicas >= math.ceil(load / CAPACITY * (1 - TOLERANCE)) - 1
        p95 = signals(load, replicas, None)["p95-latency"]
        latency = next(t for t in scaling.triggers if t.name == "p95-latency")
        assert p95 <= latency.threshold * 1.5
    # the spike at 16:00 is met with more nodes than before it
    before = max(r for s, _, r in trace if 15 * 3600 + 3000 <= s < 16 * 3600)
    during = max(r for s, _, r in trace if 16 * 3600 <= s < 16 * 3600 + 600)
    assert during > before
    # not flapping: within the plateau, a handful of changes per hour at most
    plateau = [r for s, _, r in trace if 13 * 3600 <= s < 15 * 3600]
    changes = sum(a != b for a, b in itertools.pairwise(plateau))
    assert changes <= 2 * 12


def test_a_busy_gpu_pool_grows_on_gpu_use_before_its_queue_asks(
    pools: dict[str, Scaling],
) -> None:
    # a model that saturates a GPU with 8 requests in flight: the queue target (16 per
    # node) alone would leave each GPU at 100%
    gpu = pools["gpu"]
    assert "gpu-utilization" in {t.name for t in gpu.triggers}
    with_gpu = simulate(gpu, per_minute, gpu_capacity=8)
    without = simulate(pools["cpu"], per_minute, gpu_capacity=8)
    midday = [i for i, (s, _, _) in enumerate(with_gpu) if 12 * 3600 <= s < 15 * 3600]
    assert all(with_gpu[i][2] >= without[i][2] for i in midday)
    assert sum(with_gpu[i][2] for i in midday) > sum(without[i][2] for i in midday)
    threshold = next(t.threshold for t in gpu.triggers if t.name == "gpu-utilization")
    utilisation = [
        signals(load, r, 8)["gpu-utilization"]
        for s, load, r in with_gpu
        if load > 0 and load / 8 <= gpu.maximum * threshold / 100
    ]
    assert utilisation
    mean = sum(utilisation) / len(utilisation)  # 46% with the chart's 70% target
    assert threshold / 3 <= mean <= threshold * 1.2
