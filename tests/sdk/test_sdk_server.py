"""The Python SDK against a real modelgate process: every operation as a user calls it, and
its answers checked against the server's own JSON answers or against each other."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import modelgate_client as mg
import numpy as np
import pytest

from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer
from tests.sdk.conftest import RecordingTransport, make_tenant

pytestmark = pytest.mark.e2e

RISK = "credit-risk"
MINILM = "all-MiniLM-L6-v2"
ROWS = np.array(
    [[2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1],
     [0, 18000, 0.65, 0.93, 3, 1, 2, 30000, 60, 1, 6, 0]],
    dtype=np.float32,
)  # fmt: skip


@pytest.fixture
def client(sdk_server: RunningServer) -> Any:
    with mg.Client(sdk_server.url, api_key=ADMIN_KEY, timeout=60) as made:
        yield made


def _raw_json_infer(server: RunningServer, model: str, inputs: list[dict[str, Any]]) -> Any:
    answer = httpx.post(
        f"{server.url}/v2/models/{model}/infer", json={"inputs": inputs}, headers=AUTH, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def test_health_metadata_and_models(client: mg.Client) -> None:
    assert client.is_live() and client.is_ready()
    assert "binary_tensor_data" in client.server_metadata()["extensions"]
    assert {RISK, MINILM} <= {m.id for m in client.models()}
    meta = client.model_metadata(RISK)
    assert meta.versions == ["1", "2"] and meta.inputs[0].shape == [-1, 12]
    assert client.model_ready(RISK, 1)
    with pytest.raises(mg.NotFoundError):
        client.model_metadata("no-such-model")


def test_binary_and_json_infer_agree_with_the_servers_json(sdk_server: RunningServer) -> None:
    recorder = RecordingTransport()
    with mg.Client(sdk_server.url, api_key=ADMIN_KEY, transport=recorder) as client:
        binary = client.infer(RISK, {"features": ROWS})
        as_json = client.infer(RISK, {"features": ROWS}, binary=False, outputs=["probabilities"])
    assert recorder.sent[0].headers["content-type"] == "application/octet-stream"
    assert recorder.sent[1].headers["content-type"] == "application/json"
    expected = _raw_json_infer(
        sdk_server, RISK,
        [{"name": "features", "datatype": "FP32", "shape": [2, 12], "data": ROWS.ravel().tolist()}],
    )  # fmt: skip
    assert binary["probabilities"].dtype == np.float32 and binary["label"].dtype == np.int64
    np.testing.assert_allclose(binary["probabilities"], expected["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(binary["label"], expected["label"])
    np.testing.assert_array_equal(as_json["probabilities"], binary["probabilities"])
    assert set(as_json.outputs) == {"probabilities"}
    assert binary.model_version == "2" and binary.request_id


def test_explain_answers_attributions_that_add_up(client: mg.Client) -> None:
    """docs/explanations.md: both versions of the demo model explain the log-odds of
    default; a model whose manifest does not allow it is a BadRequestError."""
    for version, method in ((1, "linear"), (2, "kernel_shap")):
        result = client.infer(RISK, {"features": ROWS}, version=version, explain=True)
        explanation = result.explanation
        assert explanation is not None and explanation.method == method
        assert explanation.attributions.shape == (len(ROWS), 12)
        assert (explanation.output, explanation.target, explanation.link) == (
            "probabilities", "default", "logit",
        )  # fmt: skip
        p = result["probabilities"][:, 1].astype(np.float64)
        total = explanation.base_value + explanation.attributions.sum(axis=1)
        np.testing.assert_allclose(total, np.log(p / (1 - p)), atol=1e-3)
    assert client.infer(RISK, {"features": ROWS}).explanation is None
    with pytest.raises(mg.BadRequestError, match="does not support explanations"):
        client.infer(MINILM, {"text": np.array(["hello"], dtype=object)}, explain=True)


def test_bytes_tensors_and_embeddings_agree(client: mg.Client) -> None:
    texts = ["the cat sat on the mat", "modelgate serves models", "héllo wörld"]
    result = client.infer(MINILM, {"text": np.array(texts, dtype=object)}, outputs=["embedding"])
    assert result.datatypes == {"embedding": "FP32"} and result["embedding"].shape == (3, 384)
    found = client.embeddings(MINILM, texts)
    vectors = np.array(found.vectors)
    got = result["embedding"]
    cosines = (
        (vectors * got).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(got, axis=1)
    )
    assert cosines.min() > 0.999 and found.prompt_tokens > len(texts)


def test_jobs_submit_wait_and_stream_results(client: mg.Client) -> None:
    requests = [mg.job_request({"features": ROWS[i : i + 1]}) for i in range(2)]
    key = f"sdk-order-{time.time_ns()}"
    job = client.jobs.submit(RISK, requests, version=2, idempotency_key=key)
    again = client.jobs.submit(RISK, requests, version=2, idempotency_key=key)
    assert again.id == job.id and job.progress.total == 2
    seen: list[mg.Job] = []
    done = client.jobs.wait(job.id, timeout=120, poll_interval=0.2, on_progress=seen.append)
    assert done.status == "succeeded" and seen[-1].status == "succeeded"
    results = list(client.jobs.results(job.id, page_size=1))
    assert [r.index for r in results] == [0, 1] and all(r.ok for r in results)
    synchronous = client.infer(RISK, {"features": ROWS}, version=2)
    for result in results:
        assert result.response is not None
        outputs = {o["name"]: o["data"] for o in result.response["outputs"]}
        np.testing.assert_allclose(
            outputs["probabilities"], synchronous["probabilities"][result.index], rtol=1e-6
        )
    assert job.id in {j.id for j in client.jobs.list(model=RISK, limit=100).jobs}
    with pytest.raises(mg.NotFoundError):
        client.jobs.get("job_does_not_exist")


def test_feedback_labels_an_earlier_prediction(client: mg.Client) -> None:
    prediction = client.infer(RISK, {"features": ROWS})
    assert prediction.request_id is not None
    assert client.feedback(prediction.request_id, labels=[0, 1]) == 2
    with pytest.raises(mg.BadRequestError, match="label"):
        client.feedback(prediction.request_id, labels=[-1, 0])


def test_a_tenant_sees_its_own_usage(sdk_server: RunningServer) -> None:
    tenant = make_tenant(sdk_server, ["infer", "usage:read"], requests_per_day=1000)
    with mg.Client(sdk_server.url, api_key=tenant.key) as client:
        for _ in range(3):
            client.infer(RISK, {"features": ROWS})
        deadline = time.monotonic() + 30  # usage is written in the background, each second
        report = client.usage(group_by="tenant,model")
        while report.total_requests < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
            report = client.usage(group_by="tenant,model")
        assert report.total_requests == 3
        assert {(r.tenant_id, r.model) for r in report.rows} == {(tenant.id, RISK)}
        quotas = {q.quota: q for q in client.quotas(tenant.id)}
        assert quotas["requests_per_day"].limit == 1000
        assert quotas["requests_per_day"].used + quotas["requests_per_day"].remaining == 1000
        with pytest.raises(mg.PermissionDeniedError):
            client.deployments.get(RISK)


def test_rate_limits_raise_with_retry_after_or_are_waited_out(sdk_server: RunningServer) -> None:
    tenant = make_tenant(sdk_server, ["infer"], requests_per_second=1, burst=1)
    no_retry = mg.RetryPolicy(max_attempts=1)
    with mg.Client(sdk_server.url, api_key=tenant.key, retry=no_retry) as client:
        client.infer(RISK, {"features": ROWS})
        with pytest.raises(mg.RateLimitError) as caught:
            client.infer(RISK, {"features": ROWS})
    assert caught.value.status == 429 and caught.value.retry_after is not None
    assert caught.value.retry_after >= 1
    recorder = RecordingTransport()
    with mg.Client(sdk_server.url, api_key=tenant.key, transport=recorder) as client:
        for _ in range(2):
            assert client.infer(RISK, {"features": ROWS})["label"].shape == (2,)
    assert 429 in recorder.statuses and recorder.statuses[-1] == 200
    assert len(recorder.sent) > 2


def test_errors_from_the_server(sdk_server: RunningServer, client: mg.Client) -> None:
    stranger = mg.Client(sdk_server.url, api_key="not-a-key")
    with stranger, pytest.raises(mg.AuthenticationError) as caught:
        stranger.infer(RISK, {"features": ROWS})
    assert caught.value.status == 401
    with pytest.raises(mg.BadRequestError, match="features") as bad:
        client.infer(RISK, {"features": ROWS[:, :3]})
    assert bad.value.request_id is not None
    with pytest.raises(mg.NotFoundError):
        client.infer("no-such-model", {"x": np.ones(1, np.float32)})
    with pytest.raises(mg.NotFoundError) as openai_shape:
        client.embeddings("no-such-model", "hi")
    assert openai_shape.value.code == "model_not_found"


def test_deployments_split_promote_and_roll_back(client: mg.Client) -> None:
    try:
        split = client.deployments.put(
            RISK, 2, split=[{"version": 1, "weight": 20}, {"version": 2, "weight": 80}]
        )
        assert split.stage == "split" and {w["version"] for w in split.weights} == {1, 2}
        assert client.deployments.get(RISK).revision == split.revision
        assert client.deployments.rollback(RISK).weights == [
            {"version": 2, "percent": 100, "role": "default"}
        ]
        promoted = client.deployments.promote(RISK, 1)
        assert promoted.default_version == 1
        assert client.infer(RISK, {"features": ROWS}).model_version == "1"
        with pytest.raises(mg.BadRequestError, match="sum to 100"):
            client.deployments.put(RISK, 2, split=[{"version": 1, "weight": 50}])
    finally:
        client.deployments.put(RISK, 2)


async def test_the_async_client_against_the_server(sdk_server: RunningServer) -> None:
    async with mg.AsyncClient(sdk_server.url, api_key=ADMIN_KEY) as client:
        result = await client.infer(RISK, {"features": ROWS})
        assert result["probabilities"].shape == (2, 2)
        vectors = (await client.embeddings(MINILM, ["a", "b"])).vectors
        assert len(vectors) == 2 and len(vectors[0]) == 384
        job = await client.jobs.submit(RISK, [mg.job_request({"features": ROWS})])
        done = await client.jobs.wait(job.id, timeout=120, poll_interval=0.2)
        assert done.status == "succeeded"
        results = [r async for r in client.jobs.results(job.id)]
        assert len(results) == 1 and results[0].ok
        body = json.dumps(results[0].response)
        assert "probabilities" in body
