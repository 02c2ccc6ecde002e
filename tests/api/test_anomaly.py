"""Anomalous inputs through the real server, over REST and gRPC, with the credit-risk demo
model: as built (``anomaly: {action: flag}``) and a copy whose manifest rejects. A typical
applicant is answered plainly; garbage is answered and marked (flag) or refused with 400 /
INVALID_ARGUMENT before the model runs (reject), counted in Prometheus and in the
monitoring report."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "a" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
TYPICAL = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]
GARBAGE = [2, 9e9, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 7]  # income, home_ownership
STRICT = "credit-risk-strict"


def strict_copy(demo: Path, root: Path) -> None:
    """A repository of the demo credit-risk model as built, and a copy that rejects."""
    os.symlink(demo / "credit-risk", root / "credit-risk")
    folder = root / STRICT
    folder.mkdir()
    manifest = yaml.safe_load((demo / "credit-risk" / "model.yaml").read_text())
    manifest["anomaly"] = {"action": "reject", "threshold": 0.5}
    manifest["preload"] = False
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    for version in ("1", "2"):
        os.symlink(demo / "credit-risk" / version, folder / version)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    root = tmp_path_factory.mktemp("repository")
    strict_copy(demo_models, root)
    async with running_server(
        tmp_path_factory.mktemp("data"), model_repository=root, admin_key=ADMIN
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server: Server) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def body(*rows: list[float]) -> dict[str, Any]:
    data = np.array(rows, dtype=np.float32)
    return {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(data.shape),
                "data": data.ravel().tolist(),
            }
        ]
    }


def grpc_request(model: str, *rows: list[float]) -> Any:
    data = np.array(rows, dtype=np.float32)
    tensor = service_pb2.ModelInferRequest().InferInputTensor(
        name="features", datatype="FP32", shape=list(data.shape)
    )
    tensor.contents.fp32_contents.extend(data.ravel().tolist())
    return service_pb2.ModelInferRequest(model_name=model, inputs=[tensor])


async def test_a_typical_applicant_is_answered_plainly(http: httpx.AsyncClient, stub: Any) -> None:
    response = await http.post("/v2/models/credit-risk/infer", json=body(TYPICAL))
    assert response.status_code == 200, response.text
    assert "x-modelgate-anomaly" not in response.headers
    assert response.json()["parameters"] == {"anomaly_score": 0.0}
    answer = await stub.ModelInfer(grpc_request("credit-risk", TYPICAL))
    assert answer.parameters["anomaly_score"].double_param == 0.0
    assert "anomalous" not in answer.parameters


async def test_garbage_is_answered_and_flagged(http: httpx.AsyncClient, stub: Any) -> None:
    response = await http.post("/v2/models/credit-risk/infer", json=body(TYPICAL, GARBAGE))
    assert response.status_code == 200, response.text
    assert response.headers["x-modelgate-anomaly"] == "1.0"
    assert response.json()["parameters"] == {
        "anomaly_score": 1.0,
        "anomalous": True,
        "anomalous_features": "annual_income,home_ownership",
    }
    assert len(response.json()["outputs"][0]["data"]) == 2  # both rows answered
    answer = await stub.ModelInfer(grpc_request("credit-risk", GARBAGE))
    assert answer.parameters["anomalous"].bool_param is True
    assert answer.parameters["anomaly_score"].double_param == 1.0
    assert answer.parameters["anomalous_features"].string_param == ("annual_income,home_ownership")


async def test_garbage_is_rejected_before_the_model_runs(
    http: httpx.AsyncClient, stub: Any
) -> None:
    typical = await http.post(f"/v2/models/{STRICT}/versions/2/infer", json=body(TYPICAL))
    assert typical.status_code == 200, typical.text
    rejected = await http.post(f"/v2/models/{STRICT}/versions/2/infer", json=body(GARBAGE))
    assert rejected.status_code == 400
    message = rejected.json()["error"]
    assert set(rejected.json()) == {"error"}
    assert "annual_income 9e+09 is out of the reference range" in message
    assert "home_ownership 7 is a category the reference does not have" in message
    request = grpc_request(STRICT, GARBAGE)
    request.model_version = "2"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "annual_income" in (caught.value.details() or "")
    stats = await http.get(f"/v2/models/{STRICT}/versions/2/stats")
    (version,) = stats.json()["model_stats"]
    assert version["inference_stats"]["success"]["count"] == 1
    assert version["execution_count"] == 1  # the two rejected requests never ran


async def test_anomalies_are_counted_in_metrics_and_the_report(
    http: httpx.AsyncClient,
) -> None:
    text = (await http.get("/metrics", headers=AS_ADMIN)).text
    counted = {
        (sample.labels["model"], sample.labels["version"], sample.labels["action"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "modelgate_anomalous_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counted == {("credit-risk", "2", "flagged"): 2.0, (STRICT, "2", "rejected"): 2.0}
    report = await http.get(
        "/admin/models/credit-risk/monitoring", params={"version": "2"}, headers=AS_ADMIN
    )
    assert report.status_code == 200, report.text
    (version,) = report.json()["versions"]
    assert version["anomalies"] == {
        "action": "flag",
        "threshold": 0.5,
        "requests": 4,
        "flagged": 2,
        "rejected": 0,
        "share": 0.5,
    }
    strict = await http.get(
        f"/admin/models/{STRICT}/monitoring", params={"version": "2"}, headers=AS_ADMIN
    )
    (version,) = strict.json()["versions"]
    assert version["anomalies"]["rejected"] == 2
    assert version["anomalies"]["share"] == pytest.approx(2 / 3)
