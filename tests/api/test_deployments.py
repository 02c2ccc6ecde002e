"""Deployments through the real server: splits, the version header, explicit versions that
bypass the split, shadow copies that are compared and never answer, a canary the gates roll
back on their own, the admin API's refusals, and a promotion on one replica taking effect on
another that shares its database."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server import Server
from tests.api.conftest import running_server
from tests.conftest import FIXTURE_MODELS

ADMIN = "deployments-test-admin-key-0123456789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
X = [1.0, 2.0, 3.0, 4.0]

FAILING = """
import numpy as np

from modelgate.model import PythonModel


class Doubler(PythonModel):
    def predict(self, inputs):
        x = inputs["x"]
        if np.any(x != 0):  # warm-up (zeros) passes; real requests fail
            raise RuntimeError("version 3 is broken")
        return {"y": x, "scores": x}
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """The fixture doubler (v1 doubles, v2 triples, the default) and a v3 that fails every
    request."""
    root = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS / "doubler", root / "doubler")
    (root / "doubler" / "3").mkdir()
    (root / "doubler" / "3" / "model.py").write_text(FAILING)
    with (root / "doubler" / "model.yaml").open("a") as manifest:
        manifest.write("default_version: 2\n")  # without a deployment, v2 answers
    return root


def body(subject: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X}]
    }
    if subject is not None:
        doc["parameters"] = {"subject": subject}
    return doc


async def poll(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    """Wait until ``check()`` holds (generous: a propagation, not a timing, is tested)."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def server(tmp_path: Path, repository: Path) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path / "data",
        admin_key=ADMIN,
        model_repository=repository,
        deployment_refresh_seconds=0.2,
    ) as running:
        yield running


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as c:
        yield c


async def put(http: httpx.AsyncClient, spec: dict[str, Any]) -> httpx.Response:
    return await http.put("/admin/models/doubler/deployment", json=spec, headers=AUTH)


async def test_a_split_is_sticky_per_subject_and_says_who_answered(
    http: httpx.AsyncClient, server: Server
) -> None:
    answer = await put(
        http,
        {
            "default_version": 1,
            "split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["weights"] == [
        {"version": 1, "percent": 50, "role": "split"},
        {"version": 2, "percent": 50, "role": "split"},
    ]
    seen: dict[str, set[str]] = {}
    for i in range(40):
        user = f"user-{i % 10}"
        response = await http.post("/v2/models/doubler/infer", json=body(user))
        assert response.status_code == 200
        doc = response.json()
        version = response.headers["x-modelgate-model-version"]
        assert doc["model_version"] == version
        assert doc["parameters"] == {"deployment_variant": "split", "deployment_stage": "split"}
        factor = {"1": 2, "2": 3}[version]
        assert doc["outputs"][0]["data"] == [v * factor for v in X]
        seen.setdefault(user, set()).add(version)
    assert all(len(versions) == 1 for versions in seen.values())  # sticky
    assert set().union(*seen.values()) == {"1", "2"}  # ten users land on both

    # gRPC routes the same way: the same user gets the same version
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = service_pb2.ModelInferRequest(model_name="doubler")
        request.parameters["subject"].string_param = "user-3"
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(X)
        answer = await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert {answer.model_version} == seen["user-3"]
    assert answer.parameters["deployment_variant"].string_param == "split"

    explicit = await http.post("/v2/models/doubler/versions/2/infer", json=body("user-0"))
    assert explicit.headers["x-modelgate-model-version"] == "2"
    assert "parameters" not in explicit.json()  # named versions bypass the split


async def test_a_shadow_is_compared_and_never_answers(http: httpx.AsyncClient) -> None:
    assert (await put(http, {"default_version": 1, "shadow": {"version": 2}})).status_code == 200
    for _ in range(10):
        response = await http.post("/v2/models/doubler/infer", json=body())
        doc = response.json()
        assert (doc["model_version"], doc["outputs"][0]["data"]) == ("1", [2 * v for v in X])
        assert doc["parameters"]["deployment_variant"] == "default"

    async def compared() -> bool:
        found = (await http.get("/admin/models/doubler/deployment", headers=AUTH)).json()
        return bool(found["shadow_report"]) and found["shadow_report"][0]["copies"] == 10

    await poll(compared)
    report = (await http.get("/admin/models/doubler/deployment", headers=AUTH)).json()
    pair = report["shadow_report"][0]
    assert (pair["version"], pair["shadow_version"], pair["errors"]) == ("1", "2", 0)
    # y: 3x against 2x, so the mean absolute difference is mean(x); scores agree exactly
    assert pair["outputs"]["y"]["mean_abs_diff"] == pytest.approx(sum(X) / len(X))
    assert pair["outputs"]["scores"]["mean_abs_diff"] == 0
    stats = (await http.get("/v2/models/doubler/versions/2/stats")).json()
    assert stats["model_stats"][0]["inference_count"] == 0  # copies are not requests
    metrics = (await http.get("/metrics")).text
    labels = 'model="doubler",outcome="ok",shadow_version="2",version="1"'
    assert f"modelgate_shadow_requests_total{{{labels}}} 10.0" in metrics
    assert (
        'modelgate_deployment_weight_percent{model="doubler",role="default",version="1"} 100.0'
        in metrics
    )


async def test_a_failing_canary_is_rolled_back_by_its_gate(http: httpx.AsyncClient) -> None:
    spec = {
        "default_version": 1,
        "canary": {"version": 3, "steps": [50, 100], "step_seconds": 600, "min_requests": 5},
    }
    answer = await put(http, spec)
    assert answer.status_code == 200, answer.text
    assert answer.json()["stage"] == "canary-1of1"
    failures = 0
    for i in range(60):
        response = await http.post("/v2/models/doubler/infer", json=body(f"user-{i}"))
        failures += response.status_code == 500
        if response.status_code == 200:
            # "default" once the gate rolled the canary back (it may while this loop runs)
            assert response.json()["parameters"]["deployment_variant"] in ("baseline", "default")
    assert failures >= 5

    async def rolled_back() -> bool:
        found = (await http.get("/admin/models/doubler/deployment", headers=AUTH)).json()
        return found["canary"] is None

    await poll(rolled_back)
    for i in range(20):  # every caller is back on version 1
        response = await http.post("/v2/models/doubler/infer", json=body(f"user-{i}"))
        assert response.headers["x-modelgate-model-version"] == "1"
    trail = (await http.get("/admin/audit", headers=AUTH)).json()
    decision = [r for r in trail if r["action"] == "deployment.rollback"]
    assert len(decision) == 1
    assert decision[0]["actor"] == "system:canary-gate"
    assert "error rate" in decision[0]["after"]["note"]


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        (
            {
                "default_version": 1,
                "split": [{"version": 1, "weight": 60}, {"version": 2, "weight": 60}],
            },
            422,
            "split weights must sum to 100 (they sum to 120)",
        ),
        ({"default_version": 7}, 400, "default_version 7 is not a version of model 'doubler'"),
        (
            {"default_version": 1, "canary": {"version": 2, "steps": [50, 10], "step_seconds": 60}},
            400,
            "canary steps must increase",
        ),
        ({"default_version": 1, "weights": [1]}, 422, "Extra inputs are not permitted"),
    ],
)
async def test_bad_deployments_are_refused_with_a_clear_message(
    http: httpx.AsyncClient, spec: dict[str, Any], status: int, message: str
) -> None:
    answer = await put(http, spec)
    assert answer.status_code == status
    assert message in answer.text
    assert (await http.get("/admin/models/doubler/deployment", headers=AUTH)).status_code == 404


async def test_manual_promote_and_rollback(http: httpx.AsyncClient) -> None:
    spec = {"default_version": 1, "canary": {"version": 2, "steps": [10, 100], "step_seconds": 600}}
    assert (await put(http, spec)).status_code == 200
    rolled = await http.post("/admin/models/doubler/deployment/rollback", headers=AUTH)
    assert rolled.json()["weights"] == [{"version": 1, "percent": 100, "role": "default"}]
    again = await http.post("/admin/models/doubler/deployment/rollback", headers=AUTH)
    assert again.status_code == 409
    promoted = await http.post(
        "/admin/models/doubler/deployment/promote", json={"version": 2}, headers=AUTH
    )
    assert promoted.json()["default_version"] == 2
    response = await http.post("/v2/models/doubler/infer", json=body())
    assert response.headers["x-modelgate-model-version"] == "2"
    denied = await http.post("/admin/models/doubler/deployment/rollback")
    assert denied.status_code == 401


async def test_a_promote_on_one_replica_takes_effect_on_the_other(
    tmp_path: Path, repository: Path
) -> None:
    shared = {
        "admin_key": ADMIN,
        "model_repository": repository,
        "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
        "deployment_refresh_seconds": 0.5,
    }
    async with (
        running_server(tmp_path / "a", **shared) as a,
        running_server(tmp_path / "b", **shared) as b,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.http_port}", timeout=30) as on_a,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.http_port}", timeout=30) as on_b,
    ):
        before = await on_b.post("/v2/models/doubler/infer", json=body())
        assert before.headers["x-modelgate-model-version"] == "2"
        assert "parameters" not in before.json()  # no deployment yet
        promoted = await on_a.post(
            "/admin/models/doubler/deployment/promote", json={"version": 1}, headers=AUTH
        )
        assert promoted.status_code == 200, promoted.text

        async def b_serves_version_1() -> bool:
            response = await on_b.post("/v2/models/doubler/infer", json=body())
            assert response.status_code == 200, response.text
            return response.headers["x-modelgate-model-version"] == "1"

        started = time.monotonic()
        await poll(b_serves_version_1, seconds=10)
        # within the refresh interval plus a query, give or take the event loop
        assert time.monotonic() - started < 10
