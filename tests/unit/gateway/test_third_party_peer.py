"""What the gateway sends a static node that is not known to be a modelgate node, and what
it believes of its answers, against a real gRPC server that records every call's metadata
(a stand-in for a hostile Triton or MLServer): no credential unless
``MODELGATE_NODE_KEY_NODES`` names the node, and no ``region`` of the node's own saying."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.cluster.client import GrpcNodeClient
from modelgate.cluster.directory import StaticNodeDirectory, keyed_nodes
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.serving.ports import Timing

KEY = "node-key-" + "k" * 24
TENSOR = service_pb2.ModelMetadataResponse.TensorMetadata


class RecordingNode(service_pb2_grpc.GRPCInferenceServiceServicer):
    """An OIP server serving ``m`` version 1, keeping each call's metadata; its answers
    claim a region (``region``), a cache state and an anomaly flag of their own (the score a
    header-breaking string)."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.region = "evil\r\nX-Injected: 1"

    def _seen(self, context: Any) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata()})

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
        self._seen(context)
        return service_pb2.ServerReadyResponse(ready=True)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._seen(context)
        index = service_pb2.RepositoryIndexResponse.ModelIndex(name="m", version="1", state="READY")
        return service_pb2.RepositoryIndexResponse(models=[index])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._seen(context)
        return service_pb2.ModelMetadataResponse(
            name="m",
            versions=["1"],
            inputs=[TENSOR(name="x", datatype="FP32", shape=[-1, 2])],
            outputs=[TENSOR(name="y", datatype="FP32", shape=[-1, 2])],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._seen(context)
        response = service_pb2.ModelInferResponse(model_name="m", model_version="1")
        response.outputs.add(name="y", datatype="FP32", shape=[1, 2])
        response.raw_output_contents.append(np.zeros((1, 2), np.float32).tobytes())
        response.parameters["region"].string_param = self.region
        response.parameters["cache"].string_param = "hit"
        response.parameters["anomalous"].bool_param = True
        response.parameters["anomaly_score"].string_param = "9\r\nX-Injected: 2"
        return response


@pytest_asyncio.fixture
async def node() -> AsyncIterator[tuple[RecordingNode, str]]:
    servicer = RecordingNode()
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def _infer(cluster: Cluster) -> dict[str, Any]:
    timing = Timing()
    await cluster.forward("m", 1, {"x": np.ones((1, 2), np.float32)}, timing)
    return dict(timing.parameters or {})


@pytest.mark.parametrize("setting", [None, "", "10.0.0.9:8001"])
async def test_a_third_party_node_receives_no_credential(
    node: tuple[RecordingNode, str], setting: str | None
) -> None:
    servicer, address = node
    entry = f"{address},10.0.0.9:8001" if setting == "10.0.0.9:8001" else address
    keyed = keyed_nodes(entry.split(","), setting)
    directory = StaticNodeDirectory(entry.split(","), credential=KEY, keyed=keyed, timeout_s=0.3)
    client = GrpcNodeClient(credential=KEY, uncredentialed=frozenset({address}) - keyed)
    cluster = Cluster(directory, client, max_attempts=1)
    try:
        await cluster.refresh()
        assert "m" in cluster.catalog
        await _infer(cluster)
    finally:
        await directory.close()
        await client.close()
    assert servicer.metadata, "the node was never called"
    assert all("authorization" not in seen for seen in servicer.metadata)
    assert all(KEY not in value for seen in servicer.metadata for value in seen.values())


@pytest.mark.parametrize("setting", ["*", "ADDRESS"])
async def test_a_node_named_a_modelgate_node_receives_the_key(
    node: tuple[RecordingNode, str], setting: str
) -> None:
    servicer, address = node
    setting = setting.replace("ADDRESS", address)
    keyed = keyed_nodes([f"{address}@eu-west"], setting)
    assert keyed == {address}
    directory = StaticNodeDirectory([f"{address}@eu-west"], credential=KEY, keyed=keyed)
    client = GrpcNodeClient(credential=KEY, uncredentialed=frozenset({address}) - keyed)
    cluster = Cluster(directory, client, max_attempts=1)
    try:
        await cluster.refresh()
        parameters = await _infer(cluster)
    finally:
        await directory.close()
        await client.close()
    assert servicer.metadata
    assert all(seen.get("authorization") == f"Bearer {KEY}" for seen in servicer.metadata)
    assert parameters.get("region") == "eu-west"  # the entry's, never the node's own word


def test_a_named_node_not_listed_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not in MODELGATE_NODES"):
        keyed_nodes(["10.0.0.1:8001"], "10.0.0.2:8001")


@given(region=st.text(max_size=40))
async def test_a_nodes_own_region_never_reaches_the_answer(region: str) -> None:
    """A static node listed without ``@region`` may answer any ``region`` parameter (CR/LF
    included): the gateway drops it, as it drops the node's ``cache``."""
    servicer = RecordingNode()
    servicer.region = region
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    directory = StaticNodeDirectory([address], credential=None)
    client = GrpcNodeClient()
    cluster = Cluster(directory, client, max_attempts=1)
    try:
        await cluster.refresh()
        parameters = await _infer(cluster)
    finally:
        await directory.close()
        await client.close()
        await server.stop(None)
    assert "region" not in parameters
    assert "cache" not in parameters


class SlowNode(RecordingNode):
    """Lists ``count`` models and takes ``delay_s`` over each one's metadata."""

    def __init__(self, count: int, delay_s: float) -> None:
        super().__init__()
        self.count = count
        self.delay_s = delay_s

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        entry = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(
            models=[entry(name=f"s{i}", version="1", state="READY") for i in range(self.count)]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await asyncio.sleep(self.delay_s)
        answer = await super().ModelMetadata(request, context)
        answer.name = request.name
        return answer


async def test_a_slow_node_is_left_out_without_holding_the_others_and_read_over_refreshes(
    node: tuple[RecordingNode, str],
) -> None:
    """A node whose metadata takes longer than the read deadline allows is left out of that
    refresh, the other nodes are not; what it gave is kept, so it joins a few refreshes on."""
    _fast, fast = node
    slow = SlowNode(count=12, delay_s=0.1)  # 1.2 s of metadata: more than one read's 0.5 s
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(slow, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    directory = StaticNodeDirectory(
        [fast, f"127.0.0.1:{port}"], credential=None, read_timeout_s=0.5
    )
    try:
        first = await directory.nodes()
        assert [n.address for n in first] == [fast]
        for _ in range(40):
            found = {n.address: n for n in await directory.nodes()}
            if len(found) == 2:
                break
        assert set(found[f"127.0.0.1:{port}"].models) == {f"s{i}" for i in range(12)}
    finally:
        await directory.close()
        await server.stop(None)
