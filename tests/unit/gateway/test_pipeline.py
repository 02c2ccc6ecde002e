"""A sharded model on a gateway: its stages in turn, each on a replica that holds it, with
the cluster's retries and breakers (the real processes: tests/e2e/test_sharding.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo, parse_node
from modelgate.core.gateway.pipeline import PipelineRuntime
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.ports import Timing
from modelgate.core.serving.stages import stage_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import StaticDirectory

X = {"name": "x", "datatype": "FP32", "shape": [-1, 2]}
H = {"name": "h", "datatype": "FP32", "shape": [-1, 2]}
Y = {"name": "y", "datatype": "FP32", "shape": [-1, 2]}
SHARDED = parse_manifest(
    "m",
    {
        "runtime": "onnxruntime",
        "inputs": [X],
        "outputs": [Y],
        "batching": {"max_batch_size": 8},
        "stages": [
            {"artifact": "stage-1/model.onnx", "inputs": [X], "outputs": [H], "size_bytes": 10},
            # the last stage reads the model's input too, passed along by the gateway
            {"artifact": "stage-2/model.onnx", "inputs": [H, X], "outputs": [Y], "size_bytes": 10},
        ],
    },
)


class StageNodes:
    """Stage 1 answers h = x + 1, stage 2 y = h * x; a node's script of failures first."""

    def __init__(self, failures: dict[str, list[ErrorKind]] | None = None):
        self.failures = failures or {}
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []

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
        self.calls.append((node.id, model, tuple(sorted(inputs))))
        script = self.failures.get(node.id, [])
        if script:
            raise ModelgateError(script.pop(0), f"{node.id} failed")
        if model == "m.stage1":
            return NodeAnswer({"h": np.asarray(inputs["x"]) + 1})
        return NodeAnswer({"y": np.asarray(inputs["h"]) * np.asarray(inputs["x"])})

    async def close(self) -> None:
        return None


def _holding(node_id: str, *stages: int) -> NodeInfo:
    return NodeInfo(
        node_id,
        f"{node_id}:1",
        models={"m": {1: SHARDED}},
        stages={f"m.stage{k}": {1: stage_manifest(SHARDED, k)} for k in stages},
    )


async def _cluster(client: StageNodes, *nodes: NodeInfo) -> Cluster:
    cluster = Cluster(StaticDirectory(list(nodes)), client, rng=random.Random(3))
    await cluster.refresh()
    return cluster


async def test_stages_run_in_turn_each_fed_what_its_manifest_names() -> None:
    client = StageNodes()
    cluster = await _cluster(client, _holding("a", 1), _holding("b", 2))
    assert set(cluster.catalog) == {"m"}  # the stages are no models of their own
    timing = Timing()
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    out = await PipelineRuntime(cluster, SHARDED, 1).infer({"x": x}, timing)
    np.testing.assert_array_equal(out["y"], (x + 1) * x)
    assert list(out) == ["y"]
    assert client.calls == [("a", "m.stage1", ("x",)), ("b", "m.stage2", ("h", "x"))]
    assert timing.node == "a+b"


async def test_a_failed_stage_call_is_retried_on_another_replica_of_that_stage() -> None:
    client = StageNodes({"b": [ErrorKind.UNAVAILABLE] * 3})
    cluster = await _cluster(client, _holding("a", 1), _holding("b", 2), _holding("c", 2))
    runtime = PipelineRuntime(cluster, SHARDED, 1)
    x = np.ones((2, 2), dtype=np.float32)
    for _ in range(6):
        out = await runtime.infer({"x": x}, Timing())
        np.testing.assert_array_equal(out["y"], np.full((2, 2), 2.0, np.float32))
    stage2 = [node for node, model, _ in client.calls if model == "m.stage2"]
    assert stage2.count("b") >= 3 and "c" in stage2  # each failure on b went on to c
    assert [node for node, model, _ in client.calls if model == "m.stage1"] == ["a"] * 6


async def test_a_stage_no_node_holds_is_unavailable_naming_no_node() -> None:
    cluster = await _cluster(StageNodes(), _holding("a", 1))
    with pytest.raises(ModelgateError) as caught:
        await PipelineRuntime(cluster, SHARDED, 1).infer({"x": np.ones((1, 2), np.float32)})
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert "a:1" not in caught.value.message


async def test_a_stage_breaker_opens_on_its_replica_only() -> None:
    client = StageNodes({"b": [ErrorKind.INTERNAL] * 100})
    cluster = await _cluster(client, _holding("a", 1), _holding("b", 2), _holding("c", 2))
    runtime = PipelineRuntime(cluster, SHARDED, 1)
    for _ in range(12):
        await runtime.infer({"x": np.ones((1, 2), np.float32)}, Timing())
    tried_b = sum(1 for node, model, _ in client.calls if node == "b")
    assert tried_b == 5  # MODELGATE_BREAKER_FAILURES: then b gets no more stage-2 calls
    assert {n["id"]: n["breaker"] for n in cluster.nodes()}["a"] == "closed"


def test_an_announcement_with_stages_parses_back() -> None:
    stage = stage_manifest(SHARDED, 2)
    document = {
        "id": "n",
        "address": "n:1",
        "models": {},
        "stages": {
            "m.stage2": {"versions": {"1": stage.model_dump(mode="json", exclude={"name"})}}
        },
        "sharded": {"m": {"versions": {"1": SHARDED.model_dump(mode="json", exclude={"name"})}}},
    }
    info = parse_node(document)
    assert info.serves("m.stage2", 1) and info.serves("m", 1) and not info.serves("m.stage1", 1)
    assert info.models["m"][1] == SHARDED
    assert info.stages["m.stage2"][1] == stage


def _manifest(stages: list[dict[str, Any]]) -> ModelManifest:
    return parse_manifest(
        "m", {"runtime": "onnxruntime", "inputs": [X], "outputs": [Y], "stages": stages}
    )


@pytest.mark.parametrize(
    ("stages", "problem"),
    [
        (
            [{"artifact": "s1/a.onnx", "inputs": [X], "outputs": [Y], "size_bytes": 1}],
            "at least two",
        ),
        (
            [
                {"artifact": "s1/a.onnx", "inputs": [X], "outputs": [H], "size_bytes": 1},
                {"artifact": "s2/a.onnx", "inputs": [Y], "outputs": [Y], "size_bytes": 1},
            ],
            "neither the model's inputs nor an earlier stage",
        ),
        (
            [
                {"artifact": "s1/a.onnx", "inputs": [X], "outputs": [H], "size_bytes": 1},
                {"artifact": "s2/a.onnx", "inputs": [H], "outputs": [H], "size_bytes": 1},
            ],
            "does not answer the model's outputs",
        ),
        (
            [
                {"artifact": "s1/a.onnx", "inputs": [X], "outputs": [H], "size_bytes": 1},
                {"artifact": "s1/b.onnx", "inputs": [H], "outputs": [Y], "size_bytes": 1},
            ],
            "share the folder",
        ),
        (
            [
                {"artifact": "a.onnx", "inputs": [X], "outputs": [H], "size_bytes": 1},
                {"artifact": "s2/b.onnx", "inputs": [H], "outputs": [Y], "size_bytes": 1},
            ],
            "folder of its own",
        ),
        (
            [
                {"artifact": "../s1/a.onnx", "inputs": [X], "outputs": [H], "size_bytes": 1},
                {"artifact": "s2/b.onnx", "inputs": [H], "outputs": [Y], "size_bytes": 1},
            ],
            "relative path",
        ),
    ],
)
def test_stages_that_cannot_run_in_order_are_refused(
    stages: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        _manifest(stages)
    assert problem in caught.value.message
