"""REST-only input handling: binary tensor data, limits, content types, and property-based
bad input. Runs the ASGI app in process (no sockets) so hypothesis can send many bodies."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api.rest import app as rest_app
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    settings = Settings(
        model_repository=FIXTURE_MODELS,
        data_dir=tmp_path_factory.mktemp("data"),
        max_body_bytes=256 * 1024,
        max_elements=100_000,
        auth="off",  # input handling; access control has suites of its own
    )
    components = build_components(settings)
    await components.registry.start()
    yield components
    await components.registry.close()
    components.executor.shutdown()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def _split_binary(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


async def test_binary_input_and_binary_output(client: httpx.AsyncClient) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        },
        x.tobytes(),
    )
    response = await client.post(
        "/v2/models/doubler/versions/1/infer", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    doc, raw = _split_binary(response)
    (output,) = doc["outputs"]
    assert output["parameters"]["binary_data_size"] == len(raw) == x.nbytes
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(2, 4), x * 2)


async def test_binary_bytes_tensor_round_trip(client: httpx.AsyncClient) -> None:
    words = [b"hi", b"", "ünï".encode()]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        raw,
    )
    response = await client.post("/v2/models/echo-text/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    doc, data = _split_binary(response)
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    upper = data[: sizes[0]]
    items, offset = [], 0
    while offset < len(upper):
        (n,) = struct.unpack_from("<I", upper, offset)
        items.append(upper[offset + 4 : offset + 4 + n])
        offset += 4 + n
    assert items == [w.upper() for w in words]
    assert np.frombuffer(data[sizes[0] :], np.int64).tolist() == [2, 0, len("ünï".encode())]


@pytest.mark.parametrize(
    ("header_length", "extra", "fragment"),
    [
        ("abc", b"", "must be an integer"),
        ("0", b"", "does not fit"),
        ("99999", b"", "does not fit"),
        (None, b"\x00" * 4, "binary"),
    ],
)
async def test_binary_header_mismatches_are_400(
    client: httpx.AsyncClient, header_length: str | None, extra: bytes, fragment: str
) -> None:
    x = np.ones((1, 4), np.float32)
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        },
        x.tobytes(),
        extra,
    )
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = await client.post("/v2/models/doubler/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


async def test_binary_size_that_does_not_match_the_shape_is_400(client: httpx.AsyncClient) -> None:
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        },
        b"\x00" * 12,
    )
    response = await client.post("/v2/models/doubler/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "needs 16" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"inputs": []}', 400, "non-empty list"),
        (b"[" * 5000 + b"]" * 5000, 400, "malformed JSON"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}',
            400,
            "needs 4",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
            b'"data": [1, 2, "a", 4]}]}',
            400,
            "numbers",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
            b'"data": [[1, 2], [3]]}]}',
            400,
            "ragged",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "data": []}]}',
            400,
            "negative",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4294967296, 4294967296], '
            b'"data": []}]}',
            413,
            "limit",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "BF16", "shape": [1, 4], "data": [1,2,3,4]}]}',
            400,
            "BF16",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1, 4], "data": [1,2,3,4]}]}',
            400,
            "unknown datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1,2,3,4]}]}',
            400,
            "expects FP32",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1,2,3,4]}]}',
            400,
            "expects [-1, 4]",
        ),
        (
            b'{"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}]}',
            400,
            "unexpected input",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}],'
            b' "outputs": [{"name": "nope"}]}',
            400,
            "unexpected output",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4],'
            b' "parameters": {"a": [1]}}]}',
            400,
            "string, number or boolean",
        ),
    ],
)
async def test_malformed_requests_get_a_400_that_names_the_problem(
    client: httpx.AsyncClient, body: bytes, status: int, fragment: str
) -> None:
    response = await client.post(
        "/v2/models/doubler/infer", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


async def test_nan_and_infinity_are_refused_in_binary_data(client: httpx.AsyncClient) -> None:
    x = np.array([[1, np.nan, np.inf, 2]], np.float32)
    body, headers = _binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        },
        x.tobytes(),
    )
    response = await client.post("/v2/models/doubler/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "NaN or Infinity" in response.json()["error"]


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/doubler/infer", content=b" " * (300 * 1024))
    assert response.status_code == 413


async def test_a_content_type_that_cannot_be_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/doubler/infer",
        content=b"--xyz--",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400
    assert "content type" in response.json()["error"]


async def test_a_form_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/doubler/infer",
        content=b"a=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v2/models/doubler/versions/1/bogus", 404),
        ("GET", "/v2/models/doubler/infer", 405),
        ("POST", "/v2/health/live", 405),
        ("DELETE", "/v2/models/doubler", 405),
        ("GET", "/v2/models/nope", 404),
        ("GET", "/v2/models/doubler/versions/7", 404),
        ("POST", "/v2/repository/models/nope/load", 404),
    ],
)
async def test_routes_answer_in_the_oip_error_shape(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)


async def test_a_path_answers_alike_however_often_and_in_whatever_order_it_is_asked(
    client: httpx.AsyncClient,
) -> None:
    """The app remembers the route of a path it has seen; the method still decides."""
    asks = [
        ("POST", "/v2/models/doubler/infer", 400),  # no body: routed, then refused
        ("GET", "/v2/models/doubler/infer", 405),
        ("DELETE", "/v2/models/doubler", 405),
        ("GET", "/v2/models/doubler", 200),
        ("GET", "/metrics", 200),
        ("POST", "/metrics", 404),  # outside /v1 and /v2: 404, never 405
        ("GET", "/v2/models/doubler/versions/1/bogus", 404),
    ]
    for _ in range(3):
        for method, path, status in asks:
            response = await client.request(method, path)
            assert response.status_code == status, (method, path)


async def test_the_remembered_routes_stay_bounded(
    app: Components, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rest_app, "_ROUTES_SEEN", 8)
    for i in range(20):
        response = await client.get(f"/v2/models/m{i}/ready")
        assert response.status_code == 404
        assert len(app.rest_app._seen) <= 8
    response = await client.get("/v2/models/" + "m" * 300)  # too long to remember
    assert response.status_code == 404
    assert all(len(path) <= 256 for path in app.rest_app._seen)


async def test_every_copy_of_a_repeated_content_type_is_checked(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/doubler/infer",
        content=b"{}",
        headers=[("content-type", "multipart/mixed"), ("content-type", "application/json")],
    )
    assert response.status_code == 400
    assert "content type" in response.json()["error"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
_inputs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "text", "", "y"]) | st.text(max_size=5),
        "datatype": st.sampled_from(["FP32", "INT32", "BYTES", "BOOL", "FP16", "BF16", "X"]),
        "shape": st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4) | _json_values,
        "data": _json_values,
        "parameters": _json_values,
    },
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(_inputs, max_size=3) | _json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": st.text(max_size=5), "parameters": _json_values}
            ),
            max_size=2,
        )
        | _json_values,
        "id": _json_values,
        "parameters": _json_values,
    },
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, model=st.sampled_from(["doubler", "echo-text", "nope"]))
async def test_no_request_body_gets_a_server_error(
    client: httpx.AsyncClient, body: dict[str, Any], model: str
) -> None:
    response = await client.post(f"/v2/models/{model}/infer", content=json.dumps(body))
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code != 200:
        assert isinstance(response.json()["error"], str)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    header=st.binary(max_size=64),
    tail=st.binary(max_size=64),
    length=st.integers(min_value=-5, max_value=200),
)
async def test_no_binary_body_gets_a_server_error(
    client: httpx.AsyncClient, header: bytes, tail: bytes, length: int
) -> None:
    response = await client.post(
        "/v2/models/doubler/infer",
        content=header + tail,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert 400 <= response.status_code < 500


async def test_the_server_still_serves_after_bad_input(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/doubler/versions/1/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


async def test_openai_errors_use_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"model": "doubler", "input": "hi"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "not an embedding model" in error["message"]
    response = await client.post("/v1/embeddings", json={"model": "nope", "input": "hi"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    # a path that names no route is not a missing model
    response = await client.get("/v1/no-such-thing")
    assert response.status_code == 404 and response.json()["error"]["code"] is None
    # token ids are an input form (docs/openai.md): the model is looked up, as for text
    response = await client.post("/v1/embeddings", json={"model": "x", "input": [1, 2]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = await client.post("/v1/embeddings", json={"model": "doubler", "input": [[1]]})
    assert response.status_code == 400 and "not an embedding model" in response.text


async def test_metrics_endpoint_names_models_and_http_answers(client: httpx.AsyncClient) -> None:
    await client.post(
        "/v2/models/doubler/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    text = (await client.get("/metrics")).text
    assert (
        'modelgate_inference_requests_total{model="doubler",status="success",'
        'tenant="anonymous",version="2"}' in text
    )
    assert "modelgate_inference_batch_size_bucket" in text
    assert 'modelgate_model_loaded{model="doubler",version="1"} 1.0' in text
    assert 'modelgate_http_requests_total{api="oip",status="400"}' in text


@pytest.mark.parametrize("path", ["/v2foo", "/v2models/doubler", "/v1x/models", "/v"])
async def test_lookalike_prefixes_are_not_routes(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)
