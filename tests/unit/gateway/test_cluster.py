"""Breakers, the retry budget and the gateway's choice of node, against an in-memory
directory and node client (the real gRPC client and Redis directory are exercised by
tests/e2e/test_gateway_nodes.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.gateway.breaker import BreakerPolicy, CircuitBreaker
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo, parse_node
from modelgate.core.gateway.retry import RetryBudget, backoff
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Timing
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import StaticDirectory

MANIFEST = parse_manifest(
    "m",
    {
        "runtime": "remote",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    },
)
INPUTS = {"x": np.ones((1, 2), dtype=np.float32)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_breaker_opens_after_failures_in_a_row_then_probes_once() -> None:
    clock = Clock()
    states: list[str] = []
    breaker = CircuitBreaker(BreakerPolicy(3, 5.0), clock=clock, on_change=states.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow()
    breaker.success()  # a success in between: the count starts again
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow() and not breaker.available()
    clock.now += 5.0
    assert breaker.available()
    assert breaker.allow()  # the probe
    assert breaker.state == "half_open" and not breaker.allow()  # one at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
    assert states == ["open", "half_open", "open", "half_open", "closed"]


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.floats(0, 1),
    events=st.lists(st.booleans(), max_size=500),
    min_retries=st.integers(0, 20),
)
def test_retries_never_exceed_the_budget(
    ratio: float, events: list[bool], min_retries: int
) -> None:
    budget = RetryBudget(ratio, min_retries=min_retries)
    for is_request in events:
        if is_request:
            budget.request()
        else:
            budget.try_retry()
    assert budget.retries <= ratio * budget.requests + min_retries + 1e-9


@given(attempt=st.integers(0, 1000), seed=st.integers())
def test_backoff_is_full_jitter_under_the_cap(attempt: int, seed: int) -> None:
    pause = backoff(attempt, base_s=0.01, cap_s=0.5, rng=random.Random(seed))
    assert 0.0 <= pause <= min(0.5, 0.01 * 2**attempt)


class Client:
    """Each node id answers with its script of outcomes (an ErrorKind raises), then ok."""

    def __init__(self, scripts: dict[str, list[ErrorKind | None]] | None = None):
        self.scripts = scripts or {}
        self.calls: list[str] = []

    async def infer(
        self,
        node: NodeInfo,
        model: str,
        version: int,
        inputs: Mapping[str, Any],
        *,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> NodeAnswer:
        self.calls.append(node.id)
        script = self.scripts.get(node.id, [])
        kind = script.pop(0) if script else None
        if kind is not None:
            raise ModelgateError(kind, f"{node.id} failed")
        return NodeAnswer({"y": np.asarray(inputs["x"]) * 2}, {"node": node.id})

    async def close(self) -> None:
        return None


def _node(node_id: str, hardware: str = "cpu", draining: bool = False) -> NodeInfo:
    return NodeInfo(
        node_id, f"{node_id}:1", hardware, models={"m": {1: MANIFEST}}, draining=draining
    )


async def _cluster(nodes: list[NodeInfo], client: Client, **kwargs: Any) -> Cluster:
    cluster = Cluster(StaticDirectory(nodes), client, rng=random.Random(7), **kwargs)
    assert await cluster.refresh() == {"m"}
    return cluster


async def test_a_node_fault_is_retried_on_another_node() -> None:
    client = Client({"a": [ErrorKind.UNAVAILABLE] * 10, "b": [ErrorKind.UNAVAILABLE] * 10})
    cluster = await _cluster([_node("a"), _node("b"), _node("c")], client)
    timing = Timing()
    out = await cluster.forward("m", 1, INPUTS, timing)
    assert out["y"].tolist() == [[2.0, 2.0]]
    assert client.calls[-1] == "c" and timing.node == "c"
    assert timing.parameters == {"node": "c"}  # what the node sent, for the response
    assert len(set(client.calls)) == len(client.calls)  # never the same node twice


async def test_a_callers_error_is_answered_at_once() -> None:
    client = Client({"a": [ErrorKind.INVALID_ARGUMENT], "b": [ErrorKind.INVALID_ARGUMENT]})
    cluster = await _cluster([_node("a"), _node("b")], client)
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing())
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert len(client.calls) == 1


async def test_draining_nodes_get_no_work_and_gpu_models_prefer_gpu_nodes() -> None:
    client = Client()
    cluster = await _cluster([_node("a", draining=True), _node("b"), _node("g", "gpu")], client)
    for _ in range(10):
        timing = Timing()
        await cluster.forward("m", 1, INPUTS, timing, prefer="gpu")
        assert timing.hardware == "gpu"
    for _ in range(10):
        await cluster.forward("m", 1, INPUTS, Timing())
    assert "a" not in client.calls and "b" in client.calls
    gpu_less = await _cluster([_node("b")], Client())
    timing = Timing()
    await gpu_less.forward("m", 1, INPUTS, timing, prefer="gpu")
    assert timing.hardware == "cpu"  # no GPU node: a CPU node answers (the flag's source)


async def test_an_open_breaker_takes_a_node_out_until_its_probe() -> None:
    clock = Clock()
    client = Client({"a": [ErrorKind.INTERNAL] * 3})
    cluster = await _cluster(
        [_node("a"), _node("b")], client, breaker=BreakerPolicy(3, 5.0), clock=clock
    )
    while client.calls.count("a") < 3:
        await cluster.forward("m", 1, INPUTS, Timing())
    calls = len(client.calls)
    for _ in range(20):
        await cluster.forward("m", 1, INPUTS, Timing())
    assert client.calls[calls:] == ["b"] * 20
    clock.now += 5.0  # half-open: one probe reaches a, succeeds, and a is back
    for _ in range(20):
        await cluster.forward("m", 1, INPUTS, Timing())
    assert "a" in client.calls[calls + 20 :]
    assert [n["breaker"] for n in cluster.nodes()] == ["closed", "closed"]


async def test_with_no_node_serving_a_model_the_answer_is_unavailable() -> None:
    cluster = await _cluster([_node("a")], Client({"a": [ErrorKind.UNAVAILABLE] * 5}))
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing())
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(ModelgateError) as missing:
        await cluster.forward("m", 9, INPUTS, Timing())
    assert missing.value.kind is ErrorKind.UNAVAILABLE


async def test_the_retry_budget_caps_retries_during_an_outage() -> None:
    client = Client({n: [ErrorKind.UNAVAILABLE] * 1000 for n in "ab"})
    cluster = await _cluster(
        [_node("a"), _node("b")],
        client,
        budget=RetryBudget(0.2, min_retries=0),
        breaker=BreakerPolicy(10_000, 1.0),
    )
    for _ in range(100):
        with pytest.raises(ModelgateError):
            await cluster.forward("m", 1, INPUTS, Timing())
    assert len(client.calls) <= 100 + 20


async def test_a_passed_deadline_sends_nothing() -> None:
    client = Client()
    clock = Clock()
    cluster = await _cluster([_node("a")], client, clock=clock)
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing(deadline=clock.now - 1))
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert client.calls == []


_JUNK = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=st.fixed_dictionaries(
        {"id": _JUNK, "address": _JUNK},
        optional={
            "hardware": _JUNK,
            "draining": _JUNK,
            "memory_bytes": _JUNK,
            "models": st.one_of(
                _JUNK,
                st.dictionaries(
                    st.text(max_size=3),
                    st.one_of(
                        _JUNK,
                        st.fixed_dictionaries(
                            {"versions": st.dictionaries(st.text(max_size=2), _JUNK, max_size=2)}
                        ),
                    ),
                    max_size=2,
                ),
            ),
        },
    )
)
def test_a_malformed_announcement_is_a_value_error(document: dict[str, Any]) -> None:
    """A foreign or corrupt entry in the directory is a ValueError (logged and skipped by
    the directory), never another exception that would stop the gateway's refresh."""
    try:
        node = parse_node(document)
    except ValueError:
        return
    assert isinstance(node.id, str) and isinstance(node.address, str)


def test_an_announcement_round_trips() -> None:
    manifest = MANIFEST.model_dump(mode="json", exclude={"name"})
    node = parse_node(
        {
            "id": "a",
            "address": "h:1",
            "hardware": "gpu",
            "models": {"m": {"versions": {"1": manifest}}},
        }
    )
    assert node.serves("m", 1) and not node.serves("m", 2) and node.hardware == "gpu"
    assert node.models["m"][1] == MANIFEST


async def test_a_node_that_leaves_takes_its_metric_series_with_it_after_a_grace() -> None:
    """Node ids come and go with pods: a gateway must not keep every departed node's
    breaker and call series forever, but scrapes must still see a dead node's last counts
    and open breaker for a while."""
    from prometheus_client import CollectorRegistry, generate_latest

    from modelgate.observability.cluster_metrics import ClusterMetrics

    now = [1000.0]
    registry = CollectorRegistry()
    metrics = ClusterMetrics(registry, grace_s=300, clock=lambda: now[0])
    client = Client({"a": [ErrorKind.UNAVAILABLE]})
    directory = StaticDirectory([_node("a"), _node("b"), _node("c")])
    cluster = Cluster(directory, client, rng=random.Random(7), observer=metrics)
    await cluster.refresh()
    for _ in range(6):
        await cluster.forward("m", 1, INPUTS, Timing())

    def exposed() -> str:
        return generate_latest(registry).decode()

    assert all(f'node="{n}"' in exposed() for n in "abc")
    directory.found = [_node("b")]  # a and c leave
    await cluster.refresh()
    assert 'node="a"' in exposed() and "modelgate_nodes 1.0" in exposed()  # within the grace
    now[0] += 200
    directory.found = [_node("b"), _node("c")]  # c comes back in time: it keeps its series
    await cluster.refresh()
    now[0] += 200
    await cluster.refresh()
    after = exposed()
    assert 'node="a"' not in after  # gone for longer than the grace
    assert 'node="c"' in after
    assert 'modelgate_breaker_state{model="",node="b",version=""} 0.0' in after
