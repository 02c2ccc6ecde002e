"""Fallback models: a model whose manifest names ``fallbacks`` is answered by the first of
them that can when it cannot itself (it fails, or is unloaded), and the answer says so;
a caller's error never falls back. Through the real REST and gRPC server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.api.conftest import running_server
from tests.conftest import FIXTURE_MODELS

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

FLAKY = """
import numpy as np

from modelgate.model import PythonModel


class Flaky(PythonModel):
    def predict(self, inputs):
        if inputs["x"].any():  # the warm-up batch (zeros) passes; real requests fail
            raise RuntimeError("the GPU fell off the bus")
        return {"y": inputs["x"], "scores": inputs["x"]}
"""


def _repository(tmp_path: Path) -> Path:
    repository = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", repository / "doubler")
    flaky = repository / "flaky"
    (flaky / "1").mkdir(parents=True)
    (flaky / "1" / "model.py").write_text(FLAKY)
    manifest = (FIXTURE_MODELS / "doubler" / "model.yaml").read_text()
    manifest = manifest.replace("class: Doubler, factor: 2", "class: Flaky")
    manifest = manifest.replace("preload: true", "preload: false")
    (flaky / "model.yaml").write_text(manifest + "fallbacks: [doubler]\n")
    return repository


@pytest.mark.asyncio
async def test_a_failing_or_unloaded_model_is_answered_by_its_fallback(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", model_repository=_repository(tmp_path)) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            answer = await client.post("/v2/models/flaky/infer", json=ROW)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model_name"] == "doubler"
            assert body["parameters"]["fallback_from"] == "flaky"
            assert answer.headers["x-modelgate-fallback"] == "doubler"
            assert body["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
            # a caller's error is the caller's: no fallback hides it
            bad = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]
            }
            refused = await client.post("/v2/models/flaky/infer", json=bad)
            assert refused.status_code == 400, refused.text
            # unloaded: the fallback answers too
            assert (await client.post("/v2/repository/models/flaky/unload")).status_code == 200
            again = await client.post("/v2/models/flaky/infer", json=ROW)
            assert again.status_code == 200 and again.json()["model_name"] == "doubler"
            # the fallback itself unloaded: nothing can answer, the first error stands
            assert (await client.post("/v2/repository/models/doubler/unload")).status_code == 200
            down = await client.post("/v2/models/flaky/infer", json=ROW)
            assert down.status_code == 503
            assert "flaky" in down.json()["error"]
            assert (await client.post("/v2/repository/models/doubler/load")).status_code == 200
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            tensor = service_pb2.ModelInferRequest.InferInputTensor(
                name="x", datatype="FP32", shape=[1, 4]
            )
            tensor.contents.fp32_contents.extend([1, 2, 3, 4])
            reply = await stub.ModelInfer(
                service_pb2.ModelInferRequest(model_name="flaky", inputs=[tensor])
            )
            assert reply.model_name == "doubler"
            assert reply.parameters["fallback_from"].string_param == "flaky"


def test_a_model_cannot_fall_back_to_itself() -> None:
    from modelgate.core.serving.manifest import parse_manifest
    from modelgate.errors import ModelgateError

    spec = {
        "runtime": "python",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    with pytest.raises(ModelgateError, match="fallbacks"):
        parse_manifest("m", {**spec, "fallbacks": ["m"]})
    with pytest.raises(ModelgateError, match="fallbacks"):
        parse_manifest("m", {**spec, "fallbacks": ["a", "a"]})
    assert parse_manifest("m", {**spec, "fallbacks": ["a", "b"]}).fallbacks == ("a", "b")
