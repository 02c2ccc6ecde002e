"""Requests over a model's ``limits`` are refused in each protocol's own shape and never
reach the model (finding 3): OIP REST 413 ``{"error": ...}``, gRPC RESOURCE_EXHAUSTED,
OpenAI 400 ``invalid_request_error`` on ``input``; jobs over their size 413 in OpenAI's shape.

The models count their calls (``CALLS`` in their module), so "never ran" is observed, not
inferred. REST and OpenAI run the ASGI app in process; gRPC calls the servicer directly."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from modelgate.api.grpc.servicer import GrpcInferenceServicer
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL_PY = """
import numpy as np

from modelgate.model import PythonModel

CALLS = []


class Doubler(PythonModel):
    def predict(self, inputs):
        CALLS.append(int(inputs["x"].shape[0]))
        return {"y": inputs["x"] * 2}


class TextLength(PythonModel):
    def predict(self, inputs):
        texts = inputs["text"].reshape(-1)
        CALLS.append(len(texts))
        return {"length": np.array([len(t) for t in texts], dtype=np.int64)}


class FakeEmbedding(PythonModel):
    def predict(self, inputs):
        texts = inputs["text"].reshape(-1)
        CALLS.append(len(texts))
        return {
            "embedding": np.full((len(texts), 4), 0.5, np.float32),
            "token_count": np.array([len(t.split()) + 2 for t in texts], dtype=np.int64),
        }
"""
TABULAR = """runtime: python
artifact: model.py
runtime_options: {class: Doubler}
inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]
outputs: [{name: y, datatype: FP32, shape: [-1, 4]}]
"""
TEXT = """runtime: python
artifact: model.py
runtime_options: {class: TextLength}
inputs: [{name: text, datatype: BYTES, shape: [-1]}]
outputs: [{name: length, datatype: INT64, shape: [-1]}]
"""
EMBEDDING = """runtime: python
artifact: model.py
runtime_options: {class: FakeEmbedding}
inputs: [{name: text, datatype: BYTES, shape: [-1]}]
outputs:
  - {name: embedding, datatype: FP32, shape: [-1, 4]}
  - {name: token_count, datatype: INT64, shape: [-1]}
embedding: {dimensions: 4, max_tokens: 32, normalize: false}
"""
MODELS = {
    # batched in chunks of 4, at most 10 rows a request
    "rows-capped": TABULAR + "batching: {max_batch_size: 4}\nlimits: {max_rows: 10}\n",
    "rows-default": TABULAR,
    "texts-capped": TEXT + "limits: {max_texts: 5, max_text_bytes: 16}\n",
    "texts-default": TEXT,
    "fake-embedding": EMBEDDING + "limits: {max_texts: 3, max_text_bytes: 64}\n",
}
MAX_JOB_ITEMS = 3
MAX_JOB_BYTES = 8192


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    root = tmp_path_factory.mktemp("limits")
    for name, manifest in MODELS.items():
        (root / "models" / name / "1").mkdir(parents=True)
        (root / "models" / name / "model.yaml").write_text(manifest)
        (root / "models" / name / "1" / "model.py").write_text(MODEL_PY)
    components = build_components(
        Settings(
            model_repository=root / "models",
            data_dir=root / "data",
            auth="off",  # limits apply to everyone; access control has suites of its own
            jobs_worker=False,
            jobs_max_items=MAX_JOB_ITEMS,
            jobs_max_bytes=MAX_JOB_BYTES,
            abuse_slow_after=1_000_000,  # many refusals on purpose
            abuse_block_after=1_000_000,
            log_level="warning",
        )
    )
    await components.open()
    await components.registry.start()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servicer(app: Components) -> GrpcInferenceServicer:
    return GrpcInferenceServicer(app.service, max_elements=1 << 24)


def calls(model: str) -> int:
    """Rows (or texts) the model has been called with so far, warm-up included."""
    module = sys.modules.get(f"modelgate_user_{model.replace('-', '_')}_v1")
    return sum(module.CALLS) if module is not None else 0


def rows(n: int) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [n, 4], "data": [1.0] * (4 * n)}


def texts(*values: str) -> dict[str, Any]:
    return {"name": "text", "datatype": "BYTES", "shape": [len(values)], "data": list(values)}


async def rest_infer(client: httpx.AsyncClient, model: str, tensor: dict[str, Any]) -> Any:
    await _loaded(client, model)
    return await client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})


async def _loaded(client: httpx.AsyncClient, model: str) -> None:
    """Load the model first, so that its warm-up is not counted as the request's work."""
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": [_small(model)]})
    assert response.status_code == 200, response.text


def _small(model: str) -> dict[str, Any]:
    return rows(1) if model.startswith("rows") else texts("a")


# model, the input over its limit, the limit, its value
OVER = [
    ("rows-capped", rows(11), "max_rows", 10),
    ("rows-default", rows(4097), "max_rows", 4096),
    ("texts-capped", texts(*["a"] * 6), "max_texts", 5),
    ("texts-capped", texts("ok", "x" * 17), "max_text_bytes", 16),
    ("texts-capped", texts("é" * 9), "max_text_bytes", 16),  # 18 bytes in 9 characters
    ("texts-default", texts(*["a"] * 257), "max_texts", 256),
    ("texts-default", texts("x" * 8193), "max_text_bytes", 8192),
    ("texts-default", texts("x" * (1 << 20)), "max_text_bytes", 8192),  # 1 MiB
]
# the same models at their limits exactly: answered
AT = [
    ("rows-capped", rows(10)),
    ("rows-default", rows(4096)),
    ("texts-capped", texts(*["a"] * 5)),
    ("texts-capped", texts("x" * 16, "é" * 8)),
    ("texts-default", texts(*["a"] * 256)),
    ("texts-default", texts("x" * 8192)),
]


@pytest.mark.parametrize(("model", "tensor", "limit", "value"), OVER)
async def test_rest_over_a_limit_is_413_and_never_runs(
    client: httpx.AsyncClient, model: str, tensor: dict[str, Any], limit: str, value: int
) -> None:
    await _loaded(client, model)
    before = calls(model)
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
    assert response.status_code == 413, response.text
    message = response.json()["error"]
    assert isinstance(message, str)
    assert f"limits.{limit}" in message and f"at most {value}" in message
    assert calls(model) == before


@pytest.mark.parametrize(("model", "tensor"), AT)
async def test_rest_at_a_limit_is_answered(
    client: httpx.AsyncClient, model: str, tensor: dict[str, Any]
) -> None:
    response = await rest_infer(client, model, tensor)
    assert response.status_code == 200, response.text


class AbortedError(Exception):
    def __init__(self, code: Any, details: str):
        super().__init__(details)
        self.code = code


class Context:
    """What the servicer uses of a grpc.aio context."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, details: str, metadata: Any = ()) -> None:
        raise AbortedError(code, details)

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


def grpc_request(model: str, tensor: dict[str, Any]) -> Any:
    message = service_pb2.ModelInferRequest(model_name=model)
    entry = message.inputs.add(name=tensor["name"], datatype=tensor["datatype"])
    entry.shape.extend(tensor["shape"])
    if tensor["datatype"] == "BYTES":
        entry.contents.bytes_contents.extend(v.encode() for v in tensor["data"])
    else:
        entry.contents.fp32_contents.extend(tensor["data"])
    return message


@pytest.mark.parametrize(("model", "tensor", "limit", "value"), OVER)
async def test_grpc_over_a_limit_is_resource_exhausted_and_never_runs(
    client: httpx.AsyncClient,
    servicer: GrpcInferenceServicer,
    model: str,
    tensor: dict[str, Any],
    limit: str,
    value: int,
) -> None:
    await _loaded(client, model)
    before = calls(model)
    with pytest.raises(AbortedError) as exc:
        await servicer.ModelInfer(grpc_request(model, tensor), Context())
    assert exc.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limits.{limit}" in str(exc.value) and f"at most {value}" in str(exc.value)
    assert calls(model) == before
    answer = await servicer.ModelInfer(grpc_request(model, _small(model)), Context())
    assert answer.model_name == model  # and the model still answers


@pytest.mark.parametrize(
    ("inputs", "limit"),
    [(["a", "b", "c", "d"], "max_texts"), (["fine", "y" * 65], "max_text_bytes")],
)
async def test_openai_over_a_limit_is_400_invalid_request_and_never_runs(
    client: httpx.AsyncClient, inputs: list[str], limit: str
) -> None:
    ok = await client.post("/v1/embeddings", json={"model": "fake-embedding", "input": "hi"})
    assert ok.status_code == 200, ok.text
    before = calls("fake-embedding")
    response = await client.post(
        "/v1/embeddings", json={"model": "fake-embedding", "input": inputs}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "input"
    assert error["code"] is None and f"limits.{limit}" in error["message"]
    assert calls("fake-embedding") == before


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=st.sampled_from(
        [
            ("rows-capped", 10, rows),
            ("texts-capped", 5, lambda n: texts(*["t"] * n)),
            ("texts-capped", 16, lambda n: texts("x" * n)),
            ("fake-embedding", 64, lambda n: texts("x" * n)),
        ]
    ),
    delta=st.integers(-3, 3),
)
async def test_sizes_around_a_cap_never_500_and_the_cap_is_exact(
    client: httpx.AsyncClient, case: tuple[str, int, Callable[[int], Any]], delta: int
) -> None:
    model, cap, build = case
    n = max(1, cap + delta)
    response = await client.post(f"/v2/models/{model}/infer", json={"inputs": [build(n)]})
    assert response.status_code == (200 if n <= cap else 413), response.text


# -- jobs ------------------------------------------------------------------------------------
def _job(*items: dict[str, Any]) -> dict[str, Any]:
    return {"model": "rows-capped", "requests": [{"inputs": [i]} for i in items]}


def _openai_413(response: httpx.Response, says: str) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "payload_too_large"
    assert says in error["message"]


async def test_a_job_of_too_many_requests_is_413(client: httpx.AsyncClient) -> None:
    items = [rows(1)] * (MAX_JOB_ITEMS + 1)
    _openai_413(await client.post("/v1/jobs", json=_job(*items)), "at most 3 requests")
    accepted = await client.post("/v1/jobs", json=_job(*items[:MAX_JOB_ITEMS]))
    assert accepted.status_code == 200, accepted.text


async def test_a_job_over_its_byte_limit_is_413_before_parsing(
    client: httpx.AsyncClient,
) -> None:
    body = orjson.dumps(_job(rows(1))) + b" " * MAX_JOB_BYTES
    response = await client.post(
        "/v1/jobs", content=body, headers={"content-type": "application/json"}
    )
    _openai_413(response, f"at most {MAX_JOB_BYTES} bytes (jobs_max_bytes)")


async def test_a_job_item_over_the_models_limits_is_413_at_submission(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/jobs", json=_job(rows(2), rows(11)))
    _openai_413(response, "requests[1]: the request has 11 rows")
    assert "limits.max_rows" in response.json()["error"]["message"]
