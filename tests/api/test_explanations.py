"""``parameters.explain`` end to end, over REST and gRPC, on a real server with access
control, on SQLite and PostgreSQL (docs/explanations.md):

- both demo credit-risk versions answer attributions that add up, with their base value, to
  the log-odds of default (the logistic regression exactly, the boosted trees by KernelSHAP);
- a model without an ``explain`` section, and an embedding model on ``/v1/embeddings``, are
  refused with a 4xx in the protocol's error shape, and so is any ``explain`` that is not a
  boolean;
- rows explained are metered as their own usage unit, and the plan's
  ``explanations_per_minute`` refuses the rows over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.serving.attribution import ADDITIVITY_TOLERANCE
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.conftest import FIXTURE_MODELS
from tests.contract.conftest import drop_postgres_database, new_postgres_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "x" * 24
#: rows explained per minute by the limited plan
LIMIT = 3
#: the demo's explain sections, as `python -m modelgate.demo build` writes them (a
#: repository built before explanations lacks them: added here)
MODEL_EXPLAIN = {"output": "probabilities", "target": "default", "link": "logit"}
VERSION_METHODS = {1: "linear", 2: "kernel_shap"}
APPLICANTS = [
    [1, 52000, 0.31, 0.45, 36, 5, 0, 15000, 36, 8, 1, 1],
    [0, 20000, 0.60, 0.90, 2, 1, 3, 30000, 60, 1, 5, 0],
    [4, 140000, 0.08, 0.05, 240, 9, 0, 5000, 12, 25, 0, 2],
]


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def explaining_repository(demo: Path, root: Path) -> Path:
    """The demo credit-risk model (with its explain sections), a fixture model without
    one, and the MiniLM embedding model."""
    shutil.copytree(demo / "credit-risk", root / "credit-risk")
    manifest = root / "credit-risk" / "model.yaml"
    data = yaml.safe_load(manifest.read_text())
    if "explain" not in data:
        manifest.write_text(manifest.read_text() + yaml.safe_dump({"explain": MODEL_EXPLAIN}))
        for number, method in VERSION_METHODS.items():
            version = root / "credit-risk" / str(number) / "version.yaml"
            version.write_text(
                version.read_text() + yaml.safe_dump({"explain": {"method": method}})
            )
    shutil.copytree(FIXTURE_MODELS / "doubler", root / "doubler")
    (root / "all-MiniLM-L6-v2").symlink_to(demo / "all-MiniLM-L6-v2")
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    database: str | None, demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    repository = explaining_repository(demo_models, tmp_path_factory.mktemp("models"))
    async with running_server(
        tmp_path_factory.mktemp("data"),
        model_repository=repository,
        database_url=database,
        auth="required",
        admin_key=ADMIN,
        usage_flush_seconds=0.2,
        # the property test sends many refused bodies with one key
        abuse_slow_after=1_000_000,
        abuse_block_after=1_000_000,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=120
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keys(http: httpx.AsyncClient) -> dict[str, str]:
    """An inference key of a tenant whose plan sets no limit on explanations (the server's
    default, 60 rows a minute, applies), and one of a tenant whose plan allows LIMIT rows a
    minute; and the first tenant's id."""
    out: dict[str, str] = {}
    for plan, body in (("open", {}), ("limited", {"explanations_per_minute": LIMIT})):
        made = await http.post("/admin/plans", json={"name": plan, **body}, headers=_as(ADMIN))
        assert made.status_code == 201, made.text
        tenant = await http.post(
            "/admin/tenants", json={"name": f"t-{plan}", "plan": plan}, headers=_as(ADMIN)
        )
        tid = tenant.json()["id"]
        key = await http.post(
            f"/admin/tenants/{tid}/keys", json={"scopes": ["infer"]}, headers=_as(ADMIN)
        )
        assert key.status_code == 201, key.text
        out[plan] = key.json()["secret"]
        out[f"{plan}-tenant"] = tid
    return out


class Answer:
    def __init__(self, outputs: dict[str, np.ndarray[Any, Any]], parameters: dict[str, Any]):
        self.outputs = outputs
        self.parameters = parameters


class RefusedError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_REST = {400: "invalid", 409: "failed_precondition", 413: "too_large", 429: "rate_limited"}
_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too_large_or_rate_limited",
}


async def rest_infer(
    http: httpx.AsyncClient, key: str, model: str, version: str, rows: Any, explain: Any
) -> Answer:
    body: dict[str, Any] = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [len(rows), 12], "data": rows}
        ],
        "parameters": {"explain": explain},
    }
    path = f"/v2/models/{model}/versions/{version}/infer"
    response = await http.post(path, json=body, headers=_as(key))
    if response.status_code != 200:
        assert set(response.json()) == {"error"}, response.text  # OIP's error shape
        raise RefusedError(
            _REST.get(response.status_code, str(response.status_code)), response.text
        )
    doc = response.json()
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
    return Answer(outputs, doc.get("parameters", {}))


async def grpc_infer(
    server: Server, key: str, model: str, version: str, rows: Any, explain: Any
) -> Answer:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[len(rows), 12])
    tensor.contents.fp32_contents.extend(np.asarray(rows, dtype=np.float32).ravel().tolist())
    param = request.parameters["explain"]
    if isinstance(explain, bool):
        param.bool_param = explain
    elif isinstance(explain, int):
        param.int64_param = explain
    elif isinstance(explain, float):
        param.double_param = explain
    else:
        param.string_param = str(explain)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            reply = await stub.ModelInfer(request, metadata=(("authorization", f"Bearer {key}"),))
        except grpc.aio.AioRpcError as exc:
            raise RefusedError(
                _GRPC.get(exc.code(), exc.code().name), exc.details() or ""
            ) from None
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    outputs = {
        o.name: np.frombuffer(raw, dtype=dtypes[o.datatype]).reshape(list(o.shape))
        for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }
    parameters = {
        k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in reply.parameters.items()
    }
    return Answer(outputs, parameters)


@pytest.fixture(params=["rest", "grpc"])
def infer(request: pytest.FixtureRequest, server: Server, http: httpx.AsyncClient) -> Any:
    if request.param == "rest":
        return lambda *args: rest_infer(http, *args)
    return lambda *args: grpc_infer(server, *args)


def logit(p: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("version", ["1", "2"])
async def test_attributions_and_base_value_add_up_to_the_log_odds(
    infer: Any, keys: dict[str, str], version: str
) -> None:
    answer = await infer(keys["open"], "credit-risk", version, APPLICANTS, True)
    attributions = answer.outputs["probabilities_attributions"]
    assert attributions.shape == (len(APPLICANTS), 12)
    assert answer.parameters["explain_method"] == VERSION_METHODS[int(version)]
    assert answer.parameters["explain_link"] == "logit"
    assert answer.parameters["explain_output"] == "probabilities"
    assert answer.parameters["explain_target"] == "default"
    base = answer.parameters["explain_base_value"]
    log_odds = logit(answer.outputs["probabilities"][:, 1])
    gaps = np.abs(base + attributions.astype(np.float64).sum(axis=1) - log_odds)
    assert gaps.max() <= ADDITIVITY_TOLERANCE, gaps
    # the riskiest applicant's features push towards default, the safest one's away from it
    assert attributions[1].sum() > 0 > attributions[2].sum()


async def test_the_linear_method_is_exact_against_the_reference_means(
    infer: Any, keys: dict[str, str], demo_models: Path
) -> None:
    """Version 1 (a logistic regression): a row at the reference means gets no attribution
    at all and its log-odds are the base value; moving one feature moves only its own
    attribution, by w_i * delta, the same at any point (the model is linear in log-odds)."""
    import json

    profile = json.loads((demo_models / "credit-risk" / "1" / "reference.json").read_text())
    means = [stats["mean"] for stats in profile["features"].values()]
    moved = list(means)
    moved[2] += 0.2  # debt_to_income
    further = list(moved)
    further[2] += 0.2
    answer = await infer(keys["open"], "credit-risk", "1", [means, moved, further], True)
    values = answer.outputs["probabilities_attributions"].astype(np.float64)
    assert np.abs(values[0]).max() < 1e-4
    base = answer.parameters["explain_base_value"]
    assert abs(logit(answer.outputs["probabilities"][:1, 1])[0] - base) < 1e-4
    others = [i for i in range(12) if i != 2]
    assert np.abs(values[1, others]).max() < 1e-4
    assert values[1, 2] > 0.01  # more debt: more risk
    assert values[2, 2] == pytest.approx(2 * values[1, 2], rel=1e-3)


async def test_the_kernel_shap_answer_is_the_same_each_time(
    infer: Any, keys: dict[str, str]
) -> None:
    """12 features: every coalition is enumerated (2^12 - 2 <= explain_samples), so the
    attributions are exact Shapley values for the background, not a random sample."""
    first = await infer(keys["open"], "credit-risk", "2", APPLICANTS[:1], True)
    second = await infer(keys["open"], "credit-risk", "2", APPLICANTS[:1], True)
    assert first.parameters["explain_samples"] == 2**12 - 2
    np.testing.assert_array_equal(
        first.outputs["probabilities_attributions"], second.outputs["probabilities_attributions"]
    )


async def test_explain_false_is_a_plain_inference(infer: Any, keys: dict[str, str]) -> None:
    answer = await infer(keys["open"], "credit-risk", "2", APPLICANTS, False)
    assert set(answer.outputs) == {"label", "probabilities"}
    assert not any(name.startswith("explain") for name in answer.parameters)


async def test_a_model_without_an_explain_section_is_refused(
    server: Server, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "parameters": {"explain": True},
    }
    response = await http.post("/v2/models/doubler/infer", json=body, headers=_as(keys["open"]))
    assert response.status_code == 400
    assert "does not support explanations" in response.json()["error"]
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    request.parameters["explain"].bool_param = True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(request, metadata=(("authorization", f"Bearer {keys['open']}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not support explanations" in (caught.value.details() or "")


async def test_embeddings_refuse_explain_in_openai_shape(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": "hello", "explain": True}
    response = await http.post("/v1/embeddings", json=body, headers=_as(keys["open"]))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "does not support explanations" in error["message"]
    plain = await http.post(
        "/v1/embeddings", json={**body, "explain": False}, headers=_as(keys["open"])
    )
    assert plain.status_code == 200, plain.text


async def test_too_many_rows_are_refused_before_any_work(infer: Any, keys: dict[str, str]) -> None:
    with pytest.raises(RefusedError) as caught:
        await infer(keys["open"], "credit-risk", "1", APPLICANTS * 6, True)  # 18 > 16
    assert caught.value.code in ("too_large", "too_large_or_rate_limited")
    assert "16 rows" in caught.value.message


_ODD = (
    st.text(max_size=8)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no infinity
    | st.sampled_from(["true", "false", "1", "0", "yes", 1, 0, 1.0])
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_ODD)
async def test_an_explain_that_is_not_a_boolean_answers_400(
    http: httpx.AsyncClient, keys: dict[str, str], value: Any
) -> None:
    with pytest.raises(RefusedError) as caught:
        await rest_infer(http, keys["open"], "credit-risk", "1", APPLICANTS[:1], value)
    assert caught.value.code == "invalid"
    assert "'explain' must be true or false" in caught.value.message


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.text(max_size=8)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
)
async def test_an_explain_that_is_not_a_boolean_is_invalid_over_grpc(
    server: Server, keys: dict[str, str], value: Any
) -> None:
    with pytest.raises(RefusedError) as caught:
        await grpc_infer(server, keys["open"], "credit-risk", "1", APPLICANTS[:1], value)
    assert caught.value.code == "invalid"


async def test_rows_explained_are_metered_as_their_own_unit(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    tenant = keys["open-tenant"]

    async def explained() -> int:
        report = await http.get(
            "/admin/usage", params={"tenant": tenant, "group_by": "tenant"}, headers=_as(ADMIN)
        )
        assert report.status_code == 200, report.text
        return sum(row["explanations"] for row in report.json()["rows"])

    # the earlier tests' rows written first: settled once two reads a few flushes apart agree
    before = await explained()
    for _ in range(50):
        await asyncio.sleep(0.6)  # three flush intervals (usage_flush_seconds=0.2)
        settled = await explained()
        if settled == before:
            break
        before = settled
    await rest_infer(http, keys["open"], "credit-risk", "1", APPLICANTS[:2], True)
    await rest_infer(http, keys["open"], "credit-risk", "1", APPLICANTS[:2], False)
    for _ in range(100):  # written by the usage recorder within its flush interval
        if await explained() == before + 2:
            break
        await asyncio.sleep(0.1)
    assert await explained() == before + 2
    scrape = await http.get("/metrics", headers=_as(ADMIN))
    assert 'modelgate_explained_rows_total{method="linear",model="credit-risk"}' in scrape.text


async def test_the_plan_limits_rows_explained_per_minute(
    infer: Any, keys: dict[str, str], http: httpx.AsyncClient
) -> None:
    key = keys["limited"]
    await infer(key, "credit-risk", "1", APPLICANTS[:1], False)  # inference is not limited
    # the first protocol's run takes the minute's rows; the second's finds none left
    with contextlib.suppress(RefusedError):
        await infer(key, "credit-risk", "1", APPLICANTS[:LIMIT], True)
    with pytest.raises(RefusedError) as caught:
        await infer(key, "credit-risk", "1", APPLICANTS[:1], True)
    assert caught.value.code in ("rate_limited", "too_large_or_rate_limited")
    assert "explained rows per minute" in caught.value.message
    answer = await infer(key, "credit-risk", "1", APPLICANTS[:1], False)  # still answered
    assert "probabilities_attributions" not in answer.outputs
    assert math.isfinite(float(answer.outputs["probabilities"][0, 1]))


async def test_a_job_item_may_ask_for_an_explanation(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    """Job items run through the same inference service (docs/jobs.md)."""
    item = {
        "parameters": {"explain": True},
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 12], "data": APPLICANTS[0]}
        ],
    }
    body = {"model": "credit-risk", "version": "1", "requests": [item, {**item, "parameters": {}}]}
    submitted = await http.post("/v1/jobs", json=body, headers=_as(keys["open"]))
    assert submitted.status_code in (200, 201, 202), submitted.text
    job = submitted.json()["id"]
    for _ in range(300):
        status = (await http.get(f"/v1/jobs/{job}", headers=_as(keys["open"]))).json()["status"]
        if status not in ("queued", "running"):
            break
        await asyncio.sleep(0.1)
    assert status == "succeeded"
    results = await http.get(f"/v1/jobs/{job}/results", headers=_as(keys["open"]))
    explained, plain = results.json()["data"]
    names = [o["name"] for o in explained["response"]["outputs"]]
    assert names == ["label", "probabilities", "probabilities_attributions"]
    assert explained["response"]["parameters"]["explain_method"] == "linear"
    assert [o["name"] for o in plain["response"]["outputs"]] == ["label", "probabilities"]
