"""A gateway and a node that carry a region and a capacity class, in one process (the
harness of tests/api/test_gateway.py): the node announces them in Redis, and every answer
the gateway forwards names the node's region, over REST (the body's ``parameters`` and
``X-Modelgate-Region``), gRPC (``parameters``) and ``/v1/embeddings`` (the header)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.api.conftest import running_server
from tests.api.test_gateway import ROW, _cluster
from tests.conftest import FIXTURE_MODELS, ROOT
from tests.unit.gateway.test_third_party_peer import RecordingNode

pytestmark = pytest.mark.asyncio


async def test_every_forwarded_answer_names_the_region_that_served_it(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    (repository / "minilm").symlink_to(ROOT / "build" / "models" / "all-MiniLM-L6-v2")
    async with _cluster(
        tmp_path, repository, region="eu-west", node={"capacity_class": "spot"}
    ) as cluster:
        answer = await cluster.client.post("/v2/models/doubler/infer", json=ROW)
        assert answer.status_code == 200, answer.text
        assert answer.json()["parameters"]["region"] == "eu-west"
        assert answer.headers["x-modelgate-region"] == "eu-west"

        tensor = service_pb2.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[1, 4]
        )
        request = service_pb2.ModelInferRequest(
            model_name="doubler",
            inputs=[tensor],
            raw_input_contents=[np.arange(4, dtype="<f4").tobytes()],
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.gateway.grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            reply = await stub.ModelInfer(request, timeout=30)
        assert reply.parameters["region"].string_param == "eu-west"

        embedded = await cluster.client.post(
            "/v1/embeddings", json={"model": "minilm", "input": ["a region"]}, timeout=60
        )
        assert embedded.status_code == 200, embedded.text
        assert embedded.headers["x-modelgate-region"] == "eu-west"
        assert len(embedded.json()["data"][0]["embedding"]) == 384

        metrics = (await cluster.client.get("/metrics")).text
        assert 'modelgate_region_requests_total{outcome="ok",region="eu-west"}' in metrics


@pytest.mark.parametrize(
    ("entry_region", "said"),
    [("", "evil\r\nX-Injected: 1"), ("", "us-east"), ("@eu-west", "us-east")],
)
async def test_a_static_nodes_own_region_is_never_believed(
    tmp_path: Path, entry_region: str, said: str
) -> None:
    """A third-party node answers a ``region`` of its choosing (CR/LF included): over REST
    the answer is 200 and names only the region of the node's entry, never the node's own
    word, in its parameters and ``X-Modelgate-Region``; its anomaly score, not a number, is
    never a header either."""
    servicer = RecordingNode()
    servicer.region = said
    node = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, node)
    port = node.add_insecure_port("127.0.0.1:0")
    await node.start()
    try:
        async with (
            running_server(
                tmp_path, role="gateway", nodes=f"127.0.0.1:{port}{entry_region}"
            ) as gateway,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as c,
        ):
            row = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                               "data": [1, 2]}]}  # fmt: skip
            for _ in range(100):  # until the gateway's first refresh found the node
                answer = await c.post("/v2/models/m/infer", json=row, timeout=30)
                if answer.status_code != 404:
                    break
                await asyncio.sleep(0.05)
    finally:
        await node.stop(None)
    assert answer.status_code == 200, answer.text
    expected = entry_region.lstrip("@") or None
    assert answer.json().get("parameters", {}).get("region") == expected
    assert answer.headers.get("x-modelgate-region") == expected
    assert "x-injected" not in answer.headers
    assert "x-modelgate-anomaly" not in answer.headers
