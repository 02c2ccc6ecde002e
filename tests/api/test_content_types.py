"""Any ``Content-Type`` with a JSON body: the JSON routes answer it, as Triton and KServe do.

``curl -d`` sends ``application/x-www-form-urlencoded``; other clients send ``text/plain``,
nothing, or something odd. The body decides, so every one of them gets its answer, or a
clear 4xx in the route's own error shape (OIP ``{"error": "..."}``, OpenAI
``{"error": {"message", ...}}``) for a type whose body cannot be JSON (``multipart/*``),
and never a 5xx. The binary tensor extension is told by ``Inference-Header-Content-Length``,
not by the type. Runs the real demo models in process, through the ASGI app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.minilm]

ADMIN = "admin-" + "c" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
ROW = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]
INFER = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": ROW}]}
LINES_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-lines")

#: what clients send: curl -d, curl --json, requests' data=, browsers' forms and the like
COMMON_TYPES = (
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/octet-stream",
    "text/html",
    "application/xml",
    "APPLICATION/JSON",
    "",
    "*/*",
    "multipart/form-data; boundary=xyz",
    "Multipart/Mixed",
    *LINES_TYPES,
)
_token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
content_types = st.sampled_from(COMMON_TYPES) | _token | st.builds("{}; {}".format, _token, _token)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("content-types"),
            admin_key=ADMIN,
            log_level="warning",
            jobs_worker=False,  # submission is what is under test
            abuse_slow_after=10**9,  # bad bodies on purpose: never slowed or blocked
            abuse_block_after=10**9,
        )
    )
    await components.open()
    await components.start()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def request_id(client: httpx.AsyncClient) -> str:
    """A prediction feedback can refer to."""
    response = await client.post("/v2/models/credit-risk/infer", json=INFER, headers=AS_ADMIN)
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def routes(request_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(protocol, path, a valid JSON body) of every JSON route that takes a body."""
    return [
        ("oip", "/v2/models/credit-risk/infer", INFER),
        ("oip", "/v2/models/credit-risk/versions/1/infer", INFER),
        ("openai", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["hello"]}),
        ("openai", "/v1/jobs", {"model": "credit-risk", "request": INFER}),
        ("openai", "/v1/feedback", {"request_id": request_id, "label": 1}),
    ]


def error_message(protocol: str, response: httpx.Response) -> str:
    """The message of an error answer, which must be in the protocol's own shape."""
    error = response.json()["error"]
    if protocol == "oip":
        assert isinstance(error, str), response.text
        return error
    assert set(error) >= {"message", "type", "param", "code"}, response.text
    return str(error["message"])


async def post(client: httpx.AsyncClient, path: str, body: bytes, kind: str | None) -> Any:
    headers = dict(AS_ADMIN)
    if kind is not None:
        headers["content-type"] = kind
    return await client.post(path, content=body, headers=headers)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=content_types)
async def test_any_content_type_with_a_json_body_is_answered_or_clearly_refused(
    client: httpx.AsyncClient, request_id: str, kind: str | None
) -> None:
    for protocol, path, body in routes(request_id):
        response = await post(client, path, orjson.dumps(body), kind)
        essence = (kind or "").split(";")[0].strip().lower()
        if essence.startswith("multipart/"):
            assert response.status_code == 400, (path, kind, response.text)
            assert "content type" in error_message(protocol, response)
        elif path == "/v1/jobs" and essence in LINES_TYPES:
            # one JSON line is one OIP request; this one is a whole job and names no model
            assert response.status_code == 400, (path, kind, response.text)
            error_message(protocol, response)
        else:
            assert response.status_code == 200, (path, kind, response.text)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=content_types, body=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
async def test_a_body_that_is_not_json_is_a_4xx_whatever_its_type(
    client: httpx.AsyncClient, request_id: str, kind: str | None, body: bytes
) -> None:
    for protocol, path, _ in routes(request_id):
        response = await post(client, path, body, kind)
        assert 400 <= response.status_code < 500, (path, kind, body, response.text)
        error_message(protocol, response)


@pytest.mark.parametrize("kind", ["application/x-www-form-urlencoded", "text/plain", None])
async def test_curl_d_reaches_the_model(client: httpx.AsyncClient, kind: str | None) -> None:
    response = await post(client, "/v2/models/credit-risk/infer", orjson.dumps(INFER), kind)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 2]


async def test_binary_tensor_data_still_works(client: httpx.AsyncClient) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 12],
                    "parameters": {"binary_data_size": 48},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    body = head + np.array([ROW], np.float32).tobytes()
    response = await client.post(
        "/v2/models/credit-risk/infer",
        content=body,
        headers={
            **AS_ADMIN,
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    probabilities = np.frombuffer(response.content[length:], np.float32)
    assert probabilities.shape == (2,)
    assert abs(float(probabilities.sum()) - 1) < 1e-5


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from([None, "application/json", "text/plain"]),
    depth=st.integers(1, 200_000),
    opener=st.sampled_from(["[", '{"a":', '{"inputs":[']),
)
async def test_json_nested_however_deep_is_a_4xx_in_each_routes_shape(
    client: httpx.AsyncClient, request_id: str, kind: str | None, depth: int, opener: str
) -> None:
    """The inference routes parse with orjson, whose depth limit is its ordinary decode
    error: a 4xx in the protocol's shape, never a 500 (the admin API: test_admin_guard.py)."""
    body = (opener * depth).encode()
    for protocol, path, _ in routes(request_id):
        response = await post(client, path, body, kind)
        assert 400 <= response.status_code < 500, (path, kind, response.text[:300])
        error_message(protocol, response)
