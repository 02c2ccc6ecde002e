"""The node pools' and gateways' scaling, as the chart configures it, replayed over metric
series recorded from real modelgate processes.

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

The thresholds, the rate window and the quantile are read from the chart's rendered
ScaledObjects, not restated. The series (``fixtures/scaling_series.json``, its header says
how, when, where and at which commit) were recorded by ``python -m bench.scaling_series``: a
gateway and a node (``modelgate serve``) under a compressed day of all-MiniLM-L6-v2
requests (night, a dawn of light traffic, a morning ramp, a peak above one node's capacity,
a spike, an evening tail, night), their ``/metrics`` scraped every second, one scrape
standing for one 15 s poll. Each poll
keeps what the chart's queries read: the node's requests in flight, the gateway's requests
in flight and waiting for a node (the morning's cold start is recorded: the node was
started when the first request came), and each second's increments of both latency
histograms, from which :func:`histogram_quantile` computes the p95 and p99 the way
Prometheus does. How a pool of N nodes reads from one recorded node, and what is not
recorded (GPU utilisation: absent, no GPU on the recording machine), is in
:mod:`bench.scaling_series` and in each test below.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.recorded_series import Recording, histogram_quantile
from tests.deploy.test_helm_chart import by_kind, helm, render  # noqa: F401 - the fixture

#: the HPA's tolerance and scale-down stabilisation window (Kubernetes' defaults)
TOLERANCE = 0.1
STABILISATION_S = 300


RECORDING = Recording.load()


@dataclass(frozen=True)
class Trigger:
    name: str
    metric_type: str
    threshold: float
    activation: float
    query: str


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
                    t.get("name", f"trigger-{n}"),
                    t.get("metricType", "AverageValue"),
                    float(t["metadata"]["threshold"]),
                    float(t["metadata"].get("activationThreshold", "0")),
                    t["metadata"]["query"],
                )
                for n, t in enumerate(spec["triggers"])
            ),
        )

    def trigger(self, name: str) -> Trigger:
        return next(t for t in self.triggers if t.name == name)


def quantile_query(query: str) -> tuple[float, float]:
    """The quantile and the rate window (s) of a histogram_quantile query."""
    found = re.search(r"histogram_quantile\(([0-9.]+),.*\[(\d+)([smh])\]", query)
    assert found, query
    unit = {"s": 1, "m": 60, "h": 3600}[found[3]]
    return float(found[1]), float(found[2]) * unit


#: what a pool's queries read at poll ``row`` with ``replicas`` nodes; ``zero_since`` is
#: the row at which the pool went to zero (-1: at the start)
Signals = Callable[[int, int, int], dict[str, float]]


def node_pool(scaling: Scaling, cold_start_wait_s: float, gpu: Signals | None = None) -> Signals:
    """The node pool's queries over the recording.

    N nodes each take 1/N of the offered requests (the gateway spreads them): they read as
    the N morning polls (:attr:`Recording.rising`) whose offered rates were nearest that
    share, their requests in flight summed and their histograms pooled, as the queries sum
    the pods. With no request in the rate window, nothing is held and there is no p95. The
    pool's one node starting reads as the recorded cold start. With no node, the queue is
    the requests waiting at the gateway: recorded where the recording had no node either
    (the morning), else the requests due since the pool went to zero, within the gateways'
    cold-start wait."""
    q, window_s = quantile_query(scaling.trigger("p95-latency").query)
    wait_rows = RECORDING.rows_in(cold_start_wait_s)

    def signals(row: int, replicas: int, zero_since: int) -> dict[str, float]:
        here = RECORDING.rows[row]
        values: dict[str, float]
        if replicas == 0:
            if here.node_up:
                since = max(zero_since + 1, row - wait_rows + 1)
                queue = float(sum(r.offered for r in RECORDING.rows[since : row + 1]))
            else:
                queue = here.waiting
            values = {"queue": queue, "p95-latency": 0.0}
        elif replicas == 1 and (not here.node_up or here.waiting):
            # the pool's one node starting, as it was recorded
            values = {
                "queue": here.node_inflight + here.waiting,
                "p95-latency": RECORDING.quantile(q, [row], window_s),
            }
        elif not any(r.offered for r in RECORDING.window(row, window_s)):
            values = {"queue": 0.0, "p95-latency": 0.0}  # nothing came: nothing to hold
        else:
            nodes = RECORDING.nearest(here.offered / replicas, replicas)
            values = {
                "queue": sum(RECORDING.rows[i].node_inflight for i in nodes),
                "p95-latency": RECORDING.quantile(q, nodes, window_s),
            }
        if gpu is not None:
            values |= gpu(row, replicas, zero_since)
        return values

    return signals


def gateways(scaling: Scaling) -> Signals:
    """The gateways' queries over the recording: requests in flight summed over the
    gateways (the offered load's, whatever their number: the gateway was not what limited
    the recording) and their p99."""
    latency = next(t for t in scaling.triggers if "histogram_quantile" in t.query)
    q, window_s = quantile_query(latency.query)

    def signals(row: int, replicas: int, zero_since: int) -> dict[str, float]:
        return {
            "trigger-0": RECORDING.rows[row].gateway_inflight,
            latency.name: RECORDING.quantile(q, [row], window_s, gateway=True),
        }

    return signals


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


@dataclass(frozen=True)
class Poll:
    row: int
    offered: int
    values: dict[str, float]
    active: bool
    replicas: int


def simulate(scaling: Scaling, signals: Signals) -> list[Poll]:
    """Each poll over the recording, starting at ``minReplicaCount``: what the queries read
    with the replicas up then, and the replicas after KEDA's and the HPA's decision."""
    step = scaling.polling_s / RECORDING.seconds_per_row
    assert step == int(step) >= 1, "the chart polls at a multiple of the recording's interval"
    replicas = scaling.minimum
    zero_since = -1
    last_active = -math.inf
    recent: list[tuple[int, int]] = []  # (second, desired) for the stabilisation window
    trace = []
    for row in range(0, len(RECORDING.rows), int(step)):
        second = row * RECORDING.seconds_per_row
        values = signals(row, replicas, zero_since)
        active = any(values[t.name] > t.activation for t in scaling.triggers)
        if active:
            last_active = second
        if replicas == 0:
            if active:
                replicas = max(1, scaling.minimum)
        elif not active and second - last_active >= scaling.cooldown_s and scaling.minimum == 0:
            replicas, zero_since = 0, row
            recent.clear()
        else:
            desired = min(max(hpa_desired(scaling, replicas, values), 1), scaling.maximum)
            desired = max(desired, scaling.minimum)
            recent = [(s, d) for s, d in recent if second - s < STABILISATION_S]
            recent.append((second, desired))
            replicas = desired if desired >= replicas else max(d for _, d in recent)
        trace.append(Poll(row, RECORDING.rows[row].offered, values, active, replicas))
    return trace


def cold_start_wait(documents: list[dict[str, Any]]) -> float:
    """The gateways' MODELGATE_COLD_START_WAIT_SECONDS, as rendered."""
    for deployment in by_kind(documents, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if variable["name"] == "MODELGATE_COLD_START_WAIT_SECONDS":
                    return float(variable["value"])
    raise AssertionError("no gateway sets MODELGATE_COLD_START_WAIT_SECONDS")


def render_scaling(helm_binary: Path, *values: str) -> tuple[dict[str, Scaling], float]:
    documents = render(
        helm_binary,
        "--set",
        "node.gpu.enabled=true",
        "--set",
        "node.autoscaling.mode=keda",
        "--set",
        "gateway.autoscaling.mode=keda",
        *values,
    )
    scalings = {
        d["metadata"]["name"].removeprefix("mg-").removeprefix("node-"): Scaling.of(d)
        for d in by_kind(documents, "ScaledObject")
    }
    return scalings, cold_start_wait(documents)


@pytest.fixture(scope="module")
def chart(helm: Path) -> tuple[dict[str, Scaling], float]:  # noqa: F811 - the imported fixture
    return render_scaling(helm)


def peak_rows() -> range:
    """The rows of the midday peak: above one node's measured capacity."""
    capacity = RECORDING.header["capacity_rps"]
    over = [i for i, r in enumerate(RECORDING.rows) if r.offered > capacity * 1.2]
    return range(over[0], over[-1] + 1)


def spike_rows() -> range:
    start, end = RECORDING.header["spike_seconds"]
    return range(start, end)


def replay(scaling: Scaling, wait_s: float) -> list[Poll]:
    return simulate(scaling, node_pool(scaling, wait_s))


def test_the_recording_is_what_the_replay_assumes() -> None:
    rows = RECORDING.rows
    header = RECORDING.header
    assert header["seconds_per_row"] == 1 and RECORDING.seconds_per_row == 15
    assert len(rows) * RECORDING.seconds_per_row >= 3600
    # night, then a day, then night again, long enough for a cooldown to be seen
    first = next(i for i, r in enumerate(rows) if r.offered)
    last = max(i for i, r in enumerate(rows) if r.offered)
    assert first >= 10 and (len(rows) - 1 - last) * 15 >= 300 + 2 * 15
    # the cold start was recorded: requests waited at the gateway while the node started
    assert not rows[first].node_up and rows[first].waiting > 0
    # the peak offered more than one node answered, and the node's queue and p95 showed it
    assert max(r.offered for r in rows) > header["capacity_rps"] * 1.5
    assert max(r.node_inflight for r in rows[: spike_rows().start]) >= 64
    assert RECORDING.quantile(0.95, [peak_rows()[-1]], 120) > 1.0
    # the morning's rows cover light load to past one node's capacity
    rates = sorted(rows[i].offered for i in RECORDING.rising)
    assert rates[0] <= 0.2 * header["capacity_rps"] and rates[-1] >= header["capacity_rps"]
    # and no GPU: the GPU trigger has no recorded series
    assert header["gpu_utilization"].startswith("absent")


def test_histogram_quantile_as_prometheus() -> None:
    bounds = (0.1, 0.5, 1.0, math.inf)
    assert histogram_quantile(0.5, bounds, [10, 20, 20, 20]) == pytest.approx(0.1)
    assert histogram_quantile(0.75, bounds, [10, 20, 20, 20]) == pytest.approx(0.3)
    assert histogram_quantile(0.95, bounds, [0, 0, 0, 5]) == 1.0  # in +Inf: the last bound
    assert histogram_quantile(0.5, bounds, [4, 4, 4, 4]) == pytest.approx(0.05)
    assert math.isnan(histogram_quantile(0.95, bounds, [0, 0, 0, 0]))


def test_an_idle_pool_goes_to_zero_and_starts_on_the_first_request(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    pools, wait_s = chart
    scaling = pools["cpu"]
    trace = replay(scaling, wait_s)
    first = next(i for i, p in enumerate(trace) if p.offered)
    last = max(i for i, p in enumerate(trace) if p.offered)
    # at night, nothing to do: no node
    assert all(p.replicas == 0 for p in trace[:first])
    # the first poll that sees requests (waiting at the gateway) starts a node
    assert trace[first].active and trace[first].replicas >= 1
    # and while they come, the pool is never back at zero
    assert all(p.replicas >= 1 for p in trace[first : last + 1])
    # after the evening tail, to zero a cooldown after the last poll that saw work (the
    # last request answered, plus the p95's rate window), and at zero through the night
    last_active = max(i for i, p in enumerate(trace) if p.active)
    assert last < last_active <= last + RECORDING.rows_in(120)
    zero = next(i for i in range(last, len(trace)) if trace[i].replicas == 0)
    assert zero == last_active + RECORDING.rows_in(scaling.cooldown_s)
    assert all(p.replicas == 0 for p in trace[zero:])


def test_light_traffic_reads_idle_on_the_queue_alone(helm: Path) -> None:  # noqa: F811
    """Why the chart's p95 activation is 0: at the p95 target instead (its earlier value),
    the pool's only sign of work under light traffic is a request in flight at the moment
    of a poll, and the recorded dawn leaves the pool at zero under its requests."""
    pools, wait_s = render_scaling(
        helm, "--set", "node.autoscaling.keda.activationLatencySeconds=0.25"
    )
    trace = replay(pools["cpu"], wait_s)
    first = next(i for i, p in enumerate(trace) if p.offered)
    last = max(i for i, p in enumerate(trace) if p.offered)
    assert any(p.replicas == 0 for p in trace[first : last + 1])


def test_the_pool_grows_at_the_peak_and_spike_and_its_latency_follows(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    pools, wait_s = chart
    scaling = pools["cpu"]
    trace = replay(scaling, wait_s)
    assert all(p.replicas <= scaling.maximum for p in trace)
    # above one node's capacity the pool has more than one node, after a poll or two
    peak = peak_rows()
    assert all(trace[i].replicas >= 2 for i in peak[2:])
    # the spike is met with more nodes than the peak before it
    spike = spike_rows()
    before = max(trace[i].replicas for i in range(spike.start - 8, spike.start))
    assert max(trace[i].replicas for i in spike) > before
    # with the nodes it chose, the p95 the pool reads is at its target or under it, once a
    # rate window has passed since the last change
    threshold = scaling.trigger("p95-latency").threshold
    window = RECORDING.rows_in(120)
    settled = [
        p
        for i, p in enumerate(trace)
        if i >= window and p.offered and len({q.replicas for q in trace[i - window : i + 1]}) == 1
    ]
    assert settled
    late = [p for p in settled if p.values["p95-latency"] > threshold * (1 + TOLERANCE)]
    assert len(late) <= 0.1 * len(settled), late


def test_the_pool_scales_down_only_after_the_stabilisation_window(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    pools, wait_s = chart
    scaling = pools["cpu"]
    trace = replay(scaling, wait_s)
    window = RECORDING.rows_in(STABILISATION_S)
    downs = [i for i in range(1, len(trace)) if 0 < trace[i].replicas < trace[i - 1].replicas]
    assert downs, "the pool never came down after the peak"
    for i in downs:
        # every count asked for over the window before was below the count it left
        asked = [
            min(hpa_desired(scaling, trace[j - 1].replicas, trace[j].values), scaling.maximum)
            for j in range(max(1, i - window + 1), i + 1)
            if trace[j - 1].replicas > 0
        ]
        assert max(asked) < trace[i - 1].replicas
    # the spike's nodes are given back before night: fewer nodes in the evening tail
    spike = spike_rows()
    top = max(trace[i].replicas for i in spike)
    last = max(i for i, p in enumerate(trace) if p.offered)
    assert min(trace[i].replicas for i in range(spike.stop, last + 1)) < top
    # not flapping: a handful of changes over the recorded day
    changes = sum(a.replicas != b.replicas for a, b in itertools.pairwise(trace))
    assert changes <= 16


def test_thresholds_that_never_scale_fail_the_replay(helm: Path) -> None:  # noqa: F811
    """The tests above read the chart: a queue target no recorded queue reaches and a p95
    target above the histograms' largest bound leave the pool at one node through the peak,
    which they would catch."""
    pools, wait_s = render_scaling(
        helm,
        "--set",
        "node.autoscaling.keda.queuePerReplica=100000",
        "--set",
        "node.autoscaling.keda.p95LatencySeconds=60",
    )
    trace = replay(pools["cpu"], wait_s)
    assert max(p.replicas for p in trace) == 1


def test_the_gpu_pool_reads_no_gpu_here_and_scales_like_the_cpu_pool(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    """No GPU was recorded: ``avg(modelgate_gpu_utilization_percent) or vector(0)`` reads 0,
    the GPU trigger is never active and asks for nothing, and the GPU pool follows its
    queue and latency exactly as the CPU pool does."""
    pools, wait_s = chart
    gpu = pools["gpu"]
    assert "gpu-utilization" in {t.name for t in gpu.triggers}
    absent = node_pool(gpu, wait_s, gpu=lambda row, replicas, zero: {"gpu-utilization": 0.0})
    assert [p.replicas for p in simulate(gpu, absent)] == [
        p.replicas for p in replay(pools["cpu"], wait_s)
    ]


def test_a_busy_gpu_pool_grows_on_gpu_use_before_its_queue_asks(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    """The GPU trigger over the recorded day with a *modelled* utilisation (none was
    recorded): a GPU saturated by a quarter of what one recorded node answered, each of N
    nodes busy in proportion to its share of the offered requests."""
    pools, wait_s = chart
    gpu = pools["gpu"]
    saturating = RECORDING.header["capacity_rps"] / 4

    def utilisation(row: int, replicas: int, zero: int) -> dict[str, float]:
        offered = RECORDING.rows[row].offered
        busy = 0.0 if replicas == 0 else min(100.0, 100 * offered / replicas / saturating)
        return {"gpu-utilization": busy}

    with_gpu = simulate(gpu, node_pool(gpu, wait_s, gpu=utilisation))
    without = replay(pools["cpu"], wait_s)
    assert all(
        a.replicas >= b.replicas for a, b in zip(with_gpu, without, strict=True) if a.offered
    )
    assert sum(p.replicas for p in with_gpu) > sum(p.replicas for p in without)
    assert all(p.replicas <= gpu.maximum for p in with_gpu)
    # where the pool's maximum can hold the load at the target, the GPUs sit near it
    threshold = gpu.trigger("gpu-utilization").threshold
    busy = [
        utilisation(p.row, p.replicas, 0)["gpu-utilization"]
        for p in with_gpu
        if p.offered and p.replicas and p.offered / saturating <= gpu.maximum * threshold / 100
    ]
    assert busy
    assert sum(busy) / len(busy) <= threshold * 1.2


def test_the_gateways_on_their_requests_in_flight_and_p99(
    chart: tuple[dict[str, Scaling], float],
) -> None:
    """Gateways on requests in flight and p99 latency (both AverageValue), as the one
    recorded gateway read them. It stood in front of a pool that stayed at one node, and
    both metrics count the time requests spend waiting for a node and queued at it: only
    the polls where the recorded node kept up are like-for-like with a pool that grows.
    There the gateways stay at their minimum; the cold start (requests held for a node up to
    the cold-start wait) and the saturated node take their p99 past its target, and they
    scale out to their maximum, which adds no capacity (see docs/kubernetes.md)."""
    pools, _ = chart
    scaling = pools["gateway"]
    trace = simulate(scaling, gateways(scaling))
    assert all(p.replicas <= scaling.maximum for p in trace)
    # (once the cold start's p99 has left the stabilisation window)
    kept_up = range(RECORDING.rising[0] + RECORDING.rows_in(STABILISATION_S), peak_rows().start)
    assert all(p.replicas == scaling.minimum for p in trace if p.row in kept_up)
    first = next(i for i, r in enumerate(RECORDING.rows) if r.offered)
    starting = [p for p in trace if first <= p.row < RECORDING.rising[0]]
    assert max(p.replicas for p in starting) == scaling.maximum
    # back to the minimum by night
    assert trace[-1].replicas == scaling.minimum
    # requests in flight alone: under a target the day's peak passes, they scale out
    inflight = max(p.values["trigger-0"] for p in trace)
    assert inflight > 0
    lower = dataclasses.replace(
        scaling,
        triggers=(
            dataclasses.replace(scaling.triggers[0], threshold=inflight / 4),
            dataclasses.replace(scaling.triggers[1], threshold=math.inf),
        ),
    )
    busier = simulate(lower, gateways(lower))
    assert 3 <= max(p.replicas for p in busier) <= scaling.maximum
    assert all(p.replicas == scaling.minimum for p in busier if p.row in kept_up)
