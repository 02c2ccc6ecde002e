"""A gateway checks each request for anomalies itself, from the profile its nodes announce,
and only then merges a checked version's requests; its calls tell the node, which then
skips its own check (core/gateway/remote.py, core/gateway/node_calls.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelgate.cluster.node import NodeAnnouncer
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.node_calls import SCREENED, SCREENED_KEY, from_gateway
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo, parse_node
from modelgate.core.gateway.remote import MergingRuntime, RemoteRuntime, remote_builder
from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.anomaly_profiles import screen_profile
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Timing, VersionSource
from modelgate.core.serving.profiles import read_reference
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.repository.filesystem import FileModelRepository
from modelgate.testing import MemoryRepository, RecordingPredictor, StaticDirectory

SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2], "feature_names": ["a", "b"]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    "anomaly": {"action": "reject", "threshold": 0.5},
}
MANIFEST = parse_manifest(
    "m", {"runtime": "remote", "batching": {"max_batch_size": 16}, **SIGNATURE}
)
_COLUMN = {"min": 0.0, "max": 10.0, "quantiles": {"levels": [0.01, 0.99], "values": [1.0, 9.0]}}
PROFILE: dict[str, Any] = {"features": {"a": _COLUMN, "b": _COLUMN}}
OTHER: dict[str, Any] = {"features": {"a": _COLUMN, "b": {**_COLUMN, "max": 11.0}}}
TYPICAL = np.array([[5.0, 5.0]], dtype=np.float32)
GARBAGE = np.array([[5.0, 1e9]], dtype=np.float32)
GATEWAY = Principal("*", "bootstrap-admin", frozenset({"infer"}), Plan("p"), "admin")
TENANT = Principal("ten_a", "key_1", frozenset({"infer"}), Plan("p"), "key")


class Client:
    """Answers y = 2x and keeps each call's metadata; holds calls while ``gate`` is shut."""

    def __init__(self, parameters: dict[str, Any] | None = None) -> None:
        self.parameters = parameters or {}
        self.headers: list[dict[str, str]] = []
        self.rows: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

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
        self.headers.append(dict(headers))
        self.rows.append(len(inputs["x"]))
        await self.gate.wait()
        return NodeAnswer({"y": np.asarray(inputs["x"]) * 2}, dict(self.parameters))

    async def close(self) -> None:
        return None


def _node(node_id: str, profile: dict[str, Any] | None = PROFILE) -> NodeInfo:
    profiles = {"m": {1: profile}} if profile is not None else {}
    return NodeInfo(node_id, f"{node_id}:1", models={"m": {1: MANIFEST}}, profiles=profiles)


async def _cluster(nodes: list[NodeInfo], client: Client | None = None) -> Cluster:
    cluster = Cluster(StaticDirectory(nodes), client or Client(), rng=random.Random(7))
    await cluster.refresh()
    return cluster


def test_a_nodes_announced_profiles_are_read_for_the_versions_it_serves() -> None:
    manifest = MANIFEST.model_dump(mode="json", exclude={"name"})
    document = {
        "id": "a",
        "address": "a:1",
        "models": {
            "m": {"versions": {"1": manifest}, "profiles": {"1": PROFILE, "2": PROFILE}},
            "n": {"versions": {"1": manifest}, "profiles": {"1": [1, 2]}},
        },
    }
    info = parse_node(orjson.loads(orjson.dumps(document)))
    assert info.profiles == {"m": {1: PROFILE}}  # not an unserved version, nor a non-object
    assert (
        parse_node({"id": "b", "address": "b:1", "models": {"m": {"versions": {}}}}).profiles == {}
    )


@pytest.mark.parametrize(
    ("profiles", "agreed"),
    [([PROFILE], True), ([PROFILE, PROFILE], True), ([PROFILE, None], False),
     ([None, PROFILE], False), ([PROFILE, OTHER], False)],
    ids=["one node", "two agree", "one announces none", "the first none", "two disagree"],
)  # fmt: skip
async def test_the_gateway_checks_only_what_every_node_of_the_version_announces_alike(
    profiles: list[dict[str, Any] | None], agreed: bool
) -> None:
    cluster = await _cluster([_node(str(i), p) for i, p in enumerate(profiles)])
    assert cluster.profiles == ({"m": {1: PROFILE}} if agreed else {})


async def test_a_changed_profile_rebuilds_the_models_versions() -> None:
    directory = StaticDirectory([_node("a")])
    cluster = Cluster(directory, Client())
    assert await cluster.refresh() == {"m"}
    assert await cluster.refresh() == set()
    directory.found = [_node("a", OTHER)]
    assert await cluster.refresh() == {"m"}
    directory.found = [_node("a", None)]
    assert await cluster.refresh() == {"m"}
    assert cluster.profiles == {}


async def test_a_checked_version_is_merged_and_its_calls_say_it_was_checked() -> None:
    client = Client()
    cluster = await _cluster([_node("a")], client)
    detector = AnomalyDetector()
    loaded = remote_builder(cluster, merge_calls=1, screens=detector)(
        VersionSource(1, "", MANIFEST)
    )
    assert isinstance(loaded.runtime, MergingRuntime) and loaded.batched
    assert detector.checks(loaded)
    assert detector.screen(loaded, {"x": TYPICAL}) == {"anomaly_score": 0.0}
    with pytest.raises(ModelgateError) as refused:
        detector.screen(loaded, {"x": GARBAGE})
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    client.gate.clear()
    first = asyncio.ensure_future(loaded.runtime.infer({"x": TYPICAL}, Timing()))
    await asyncio.sleep(0.01)
    rest = asyncio.gather(*(loaded.runtime.infer({"x": TYPICAL}, Timing()) for _ in range(3)))
    await asyncio.sleep(0.01)
    client.gate.set()
    await first, await rest
    assert client.rows == [1, 3]  # the three waiting requests went in one call
    assert all(h.get(SCREENED_KEY) == SCREENED for h in client.headers)


async def test_a_nodes_own_verdict_on_a_checked_call_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node that did not believe the entry (its gateways' key is not its admin key) checks
    the merged call as a whole: its verdict is the batch's, never a caller's."""
    verdict = {"anomaly_score": 1.0, "anomalous": True, "anomalous_features": "b", "node": "a"}
    cluster = await _cluster([_node("a")], Client(verdict))
    for screened, expected in [(True, {"node": "a"}), (True, {"node": "a"}), (False, verdict)]:
        timing = Timing()
        await cluster.forward("m", 1, {"x": TYPICAL}, timing, screened=screened)
        assert timing.parameters == expected
    assert caplog.text.count("checked model m's merged calls for anomalies itself") == 1


@pytest.mark.parametrize(
    ("profile", "screens"),
    [(None, True), (PROFILE, False), ({"features": {"a": {**_COLUMN, "min": 20.0}}}, True)],
    ids=["no profile announced", "no detector", "a profile that does not parse"],
)
async def test_a_version_the_gateway_does_not_check_is_neither_merged_nor_marked(
    profile: dict[str, Any] | None, screens: bool
) -> None:
    client = Client()
    cluster = await _cluster([_node("a", profile)], client)
    detector = AnomalyDetector()
    loaded = remote_builder(cluster, screens=detector if screens else None)(
        VersionSource(1, "", MANIFEST)
    )
    assert isinstance(loaded.runtime, RemoteRuntime) and not loaded.batched
    assert not detector.checks(loaded)
    await loaded.runtime.infer({"x": GARBAGE}, Timing())
    assert SCREENED_KEY not in client.headers[0]  # the node checks it


async def test_a_node_skips_the_check_only_of_its_gateways_checked_calls() -> None:
    registry = ModelRegistry(
        MemoryRepository({"m": {1: dict(SIGNATURE)}}),
        {"python": lambda source: RecordingPredictor()},
    )
    detector = AnomalyDetector()
    service = InferenceService(registry, anomalies=detector, forwarded=from_gateway)

    def garbage(screened: bool) -> InferenceRequest:
        request = InferenceRequest("m", None, [Tensor("x", "FP32", GARBAGE)])
        request.screened = screened
        return request

    try:
        loaded = await registry.acquire("m", None)
        screen = detector.build_screen(loaded.manifest, 1, PROFILE)
        assert screen is not None
        detector.attach(loaded, screen)
        answer = await service.infer(garbage(True), GATEWAY)
        assert answer.parameters == {}  # the gateway checked it, and answers its caller
        for request, principal in [
            (garbage(False), GATEWAY),  # a gateway that did not check it
            (garbage(True), TENANT),  # anyone else's word is not believed
            (garbage(True), None),
        ]:
            with pytest.raises(ModelgateError) as refused:
                await service.infer(request, principal)
            assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    finally:
        await registry.close()


def test_a_node_announces_what_its_versions_checks_read(demo_models: Path) -> None:
    registry = ModelRegistry(FileModelRepository(str(demo_models)), {})
    announcer = NodeAnnouncer(
        None,  # type: ignore[arg-type]  # not announced: only the document is built
        registry,
        node_id="a",
        address="a:1",
        hardware="cpu",
        memory_bytes=0,
    )
    document = orjson.loads(orjson.dumps(announcer.document()))
    info = parse_node(document)
    for source in registry.repository.versions("credit-risk"):
        reference = read_reference(source)
        assert reference is not None
        expected = screen_profile(reference, source.manifest)
        assert info.profiles["credit-risk"][source.version] == expected
    assert "all-MiniLM-L6-v2" not in info.profiles  # no anomaly section
