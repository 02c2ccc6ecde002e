"""A gateway and a node that carry a region and a capacity class, in one process (the
harness of tests/api/test_gateway.py): the node announces them in Redis, and every answer
the gateway forwards names the node's region, over REST (the body's ``parameters`` and
``X-Modelgate-Region``), gRPC (``parameters``) and ``/v1/embeddings`` (the header)."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.api.test_gateway import ROW, _cluster
from tests.conftest import FIXTURE_MODELS, ROOT

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
