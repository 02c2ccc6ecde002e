"""A python model's warm-up: its inputs' declared examples, or no warm-up when a BYTES input
declares none (never made-up text its code may fail to parse); a model that fails on its
warm-up is logged with its traceback and answered UNAVAILABLE in each protocol's shape."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2

from modelgate.api.grpc.servicer import GrpcInferenceServicer
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL_PY = """
import json

import numpy as np

from modelgate.model import PythonModel

SEEN = []


class ParseJson(PythonModel):
    def predict(self, inputs):
        docs = [json.loads(d) for d in inputs["doc"].reshape(-1)]
        SEEN.extend(docs)
        return {"keys": np.array([len(d) for d in docs], dtype=np.int64)}
"""
MANIFEST = """runtime: python
artifact: model.py
runtime_options: {{class: ParseJson}}
inputs: [{{name: doc, datatype: BYTES, shape: [-1]{example}}}]
outputs: [{{name: keys, datatype: INT64, shape: [-1]}}]
"""
MODELS = {
    "no-example": "",
    "with-example": ', example: \'{"warm": 1, "up": 2}\'',
    "bad-example": ", example: not json",
}
DOC = {"name": "doc", "datatype": "BYTES", "shape": [1], "data": ['{"a": 1}']}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    root = tmp_path_factory.mktemp("warm-up")
    for name, example in MODELS.items():
        (root / "models" / name / "1").mkdir(parents=True)
        (root / "models" / name / "model.yaml").write_text(MANIFEST.format(example=example))
        (root / "models" / name / "1" / "model.py").write_text(MODEL_PY)
    components = build_components(
        Settings(
            model_repository=root / "models",
            data_dir=root / "data",
            auth="off",
            jobs_worker=False,
            log_level="warning",
        )
    )
    await components.open()
    await components.registry.start()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def seen(name: str) -> list[Any]:
    return list(sys.modules[f"modelgate_user_{name.replace('-', '_')}_v1"].SEEN)


async def test_without_an_example_a_bytes_input_is_not_warmed_up(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="modelgate.registry"):
        response = await http.post("/v2/models/no-example/infer", json={"inputs": [DOC]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1]
    assert seen("no-example") == [{"a": 1}]  # the request only: no made-up warm-up text
    assert "no-example v1: not warmed up" in caplog.text


async def test_the_declared_example_is_the_warm_up(http: httpx.AsyncClient) -> None:
    response = await http.post("/v2/models/with-example/infer", json={"inputs": [DOC]})
    assert response.status_code == 200, response.text
    warm_ups = seen("with-example")[:-1]
    assert warm_ups and all(doc == {"warm": 1, "up": 2} for doc in warm_ups)


async def test_a_failed_warm_up_is_logged_and_answered_unavailable(
    http: httpx.AsyncClient, app: Components, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="modelgate.registry"):
        response = await http.post("/v2/models/bad-example/infer", json={"inputs": [DOC]})
    assert response.status_code == 503
    error = response.json()["error"]
    assert "model 'bad-example' version 1: failed its warm-up" in error
    assert "Expecting value" in error  # the cause
    failed = [r for r in caplog.records if "failed its warm-up" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # the model's own traceback
    assert "json.decoder.JSONDecodeError" in caplog.text

    servicer = GrpcInferenceServicer(app.service, max_elements=1 << 20)
    request = service_pb2.ModelInferRequest(model_name="bad-example")
    tensor = request.inputs.add(name="doc", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b'{"a": 1}')
    context = AbortingContext()
    with pytest.raises(AbortedError):
        await servicer.ModelInfer(request, context)
    assert context.code is grpc.StatusCode.UNAVAILABLE
    assert "failed its warm-up" in context.details


class AbortedError(Exception):
    pass


class AbortingContext:
    """What the servicer asks of a grpc.aio context on an error path."""

    code: Any = None
    details = ""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    async def abort(self, code: Any, details: str, metadata: Any = ()) -> None:
        self.code, self.details = code, details
        raise AbortedError

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass
