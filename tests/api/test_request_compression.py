"""Compressed request bodies (``Content-Encoding: gzip | deflate``) as tritonclient sends
them with ``request_compression_algorithm``, over a real server; the body limit holds after
inflating (a zip bomb is 413) and before (the compressed size); gRPC's own compression."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http.aio as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from modelgate.api.rest import content_encoding
from modelgate.api.rest.asgi import receive_body
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 64 * 1024
X = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], dtype=np.float32)
BODY = orjson.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}]}
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    data = tmp_path_factory.mktemp("data")
    limits = {"max_body_bytes": LIMIT, "admin_max_body_bytes": LIMIT}
    async with running_server(data, grpc_max_message_bytes=LIMIT, **limits) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=30
    ) as client:
        yield client


def doubler_input(module: Any, binary: bool = True) -> Any:
    item = module.InferInput("x", list(X.shape), "FP32")
    if module is triton_http:
        item.set_data_from_numpy(X, binary_data=binary)
    else:
        item.set_data_from_numpy(X)
    return item


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
async def test_tritonclient_http_request_compression(
    server: Server, algorithm: str, binary: bool
) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        result = await client.infer(
            "doubler",
            [doubler_input(triton_http, binary)],
            "1",
            request_compression_algorithm=algorithm,
        )
    finally:
        await client.close()
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_tritonclient_grpc_compression(server: Server, algorithm: str) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        result = await client.infer(
            "doubler", [doubler_input(triton_grpc)], "1", compression_algorithm=algorithm
        )
    finally:
        await client.close()
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda b: b),
        ("GZIP", gzip.compress),
        ("gzip", lambda b: gzip.compress(b[:30]) + gzip.compress(b[30:])),  # two members
    ],
)
async def test_encodings_inflate_on_the_inference_route(
    http: httpx.AsyncClient, encoding: str, encode: Any
) -> None:
    response = await http.post(
        "/v2/models/doubler/versions/1/infer",
        content=encode(BODY),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == (X * 2).ravel().tolist()


async def test_other_routes_inflate_too(http: httpx.AsyncClient) -> None:
    """read_body (repository, OpenAI, jobs) honours the header as the inference route does."""
    response = await http.post(
        "/v2/repository/index",
        content=gzip.compress(b'{"ready": true}'),
        headers={"content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert {row["name"] for row in response.json()} >= {"doubler"}


@pytest.mark.parametrize("path", ["/v2/models/doubler/versions/1/infer", "/v2/repository/index"])
async def test_an_unknown_encoding_is_415_in_the_oip_shape(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.post(path, content=BODY, headers={"content-encoding": "br"})
    assert response.status_code == 415
    assert "Content-Encoding 'br' is not supported" in response.json()["error"]


async def test_an_unknown_encoding_is_415_in_the_openai_shape(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/embeddings", content=b"{}", headers={"content-encoding": "gzip, br"}
    )
    assert response.status_code == 415
    assert "not supported" in response.json()["error"]["message"]


async def test_a_zip_bomb_is_413_after_inflating(http: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"[" + b" " * (100 * LIMIT) + b"]")
    assert len(bomb) < LIMIT  # within the limit as sent
    response = await http.post(
        "/v2/models/doubler/versions/1/infer", content=bomb, headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed body is over the limit" in response.json()["error"]


async def test_the_compressed_size_is_limited_before_inflating(http: httpx.AsyncClient) -> None:
    incompressible = np.random.default_rng(0).bytes(2 * LIMIT)
    response = await http.post(
        "/v2/models/doubler/versions/1/infer",
        content=zlib.compress(incompressible),
        headers={"content-encoding": "deflate"},
    )
    assert response.status_code == 413
    assert "the body is over the limit" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not compressed at all", "not valid gzip data"),
        (gzip.compress(BODY, mtime=0)[:-12], "ends before its compressed data does"),
        (gzip.compress(BODY, mtime=0) + b"trailing", "not valid gzip data"),
    ],
    ids=["plain", "truncated", "trailing"],  # the same in every xdist worker
)
async def test_a_broken_body_is_400(http: httpx.AsyncClient, body: bytes, message: str) -> None:
    response = await http.post(
        "/v2/models/doubler/versions/1/infer", content=body, headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 400
    assert message in response.json()["error"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    encoding=st.sampled_from(["gzip", "deflate", "x-gzip", "identity"]),
    payload=st.binary(max_size=2048) | st.just(BODY),
    cut=st.integers(min_value=0, max_value=4096),
    flip=st.integers(min_value=0, max_value=4096),
)
async def test_any_body_is_200_or_a_clear_4xx(
    http: httpx.AsyncClient, encoding: str, payload: bytes, cut: int, flip: int
) -> None:
    wire = zlib.compress(payload) if encoding == "deflate" else gzip.compress(payload)
    wire = wire[: max(1, len(wire) - cut % 8)]  # sometimes truncated
    if flip % 3 == 0 and wire:  # sometimes one byte flipped
        at = flip % len(wire)
        wire = wire[:at] + bytes([wire[at] ^ 0x5A]) + wire[at + 1 :]
    response = await http.post(
        "/v2/models/doubler/versions/1/infer", content=wire, headers={"content-encoding": encoding}
    )
    assert response.status_code in (200, 400, 413), response.text
    assert response.json().get("error") or response.status_code == 200


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(["oip", "repository", "openai"]),
    encoding=st.sampled_from(["gzip", "deflate"]),
    over=st.integers(min_value=1, max_value=200 * LIMIT),
)
async def test_a_bomb_is_413_in_each_routes_shape(
    http: httpx.AsyncClient, route: str, encoding: str, over: int
) -> None:
    """Past the first INLINE_BYTES the rest is inflated in a thread: the 413 is the same."""
    padded = b"[" + b" " * (LIMIT + over) + b"]"
    wire = zlib.compress(padded) if encoding == "deflate" else gzip.compress(padded)
    path = {
        "oip": "/v2/models/doubler/versions/1/infer",
        "repository": "/v2/repository/index",
        "openai": "/v1/embeddings",
    }[route]
    response = await http.post(path, content=wire, headers={"content-encoding": encoding})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    message = error["message"] if route == "openai" else error
    assert message == f"the decompressed body is over the limit of {LIMIT} bytes"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.integers(min_value=1, max_value=1500),
    encoding=st.sampled_from(["gzip", "deflate"]),
    spaces=st.integers(min_value=0, max_value=LIMIT // 2),
)
async def test_a_large_body_answers_as_it_does_uncompressed(
    http: httpx.AsyncClient, rows: int, encoding: str, spaces: int
) -> None:
    """Bodies on both sides of INLINE_BYTES (inline only, or inline then a thread) answer
    exactly what the same body sent uncompressed does."""
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4],
                     "data": x.ravel().tolist()}]}
    )  # fmt: skip
    body = body[:1] + b" " * min(spaces, LIMIT - len(body)) + body[1:]
    wire = zlib.compress(body) if encoding == "deflate" else gzip.compress(body)
    path = "/v2/models/doubler/versions/1/infer"
    plain = await http.post(path, content=body)
    inflated = await http.post(path, content=wire, headers={"content-encoding": encoding})
    assert inflated.status_code == plain.status_code
    assert inflated.json() | {"id": None} == plain.json() | {"id": None}
    if plain.status_code == 200:
        assert inflated.json()["outputs"][0]["data"] == (x * 2).ravel().tolist()


async def test_the_body_is_inflated_chunk_by_chunk_within_the_limit() -> None:
    """Fed in small chunks as a slow client sends them: a bomb stops one byte past the limit,
    and a good body is whole."""

    def chunked(data: bytes) -> Any:
        parts = [data[i : i + 7] for i in range(0, len(data), 7)] or [b""]
        messages = [
            {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
            for i, p in enumerate(parts)
        ]

        async def receive() -> Any:
            return messages.pop(0)

        return receive

    assert await receive_body(chunked(gzip.compress(BODY)), LIMIT, b"gzip") == BODY
    with pytest.raises(ModelgateError) as info:
        await receive_body(chunked(gzip.compress(b"0" * (LIMIT * 50))), LIMIT, b"gzip")
    assert info.value.kind is ErrorKind.PAYLOAD_TOO_LARGE


ROWS = np.arange(400, dtype=np.float32).reshape(100, 4)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
async def test_tritonclient_http_response_compression_gets_a_plain_answer(
    server: Server, algorithm: str, binary: bool
) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    item = triton_http.InferInput("x", list(ROWS.shape), "FP32")
    item.set_data_from_numpy(ROWS, binary_data=binary)
    try:
        result = await client.infer(
            "doubler",
            [item],
            "1",
            outputs=[triton_http.InferRequestedOutput("y", binary_data=binary)],
            response_compression_algorithm=algorithm,
            request_compression_algorithm=algorithm,
        )
    finally:
        await client.close()
    np.testing.assert_array_equal(result.as_numpy("y"), ROWS * 2)


@pytest.mark.parametrize("accept", ["gzip", "deflate", "gzip, deflate, br"])
async def test_answers_are_not_compressed(http: httpx.AsyncClient, accept: str) -> None:
    """Compressing would cost several times the answer's encoding on the event loop, and
    requests, httpx and aiohttp ask for it by default (api/rest/content_encoding.py)."""
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [100, 4], "data": ROWS.ravel().tolist()}
            ]
        }
    )
    response = await http.post(
        "/v2/models/doubler/versions/1/infer", content=body, headers={"accept-encoding": accept}
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)


async def test_grpc_holds_the_message_limit_after_inflating(server: Server) -> None:
    """A gzip message that inflates past ``grpc_max_message_bytes`` is refused by gRPC."""
    rows = np.zeros((4096, 4), dtype=np.float32)  # 64 KiB of tensor, a few hundred bytes gzipped
    item = triton_grpc.InferInput("x", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        with pytest.raises(InferenceServerException) as info:
            await client.infer("doubler", [item], "1", compression_algorithm="gzip")
    finally:
        await client.close()
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


async def test_one_caller_past_its_share_of_the_inflating_pool_is_503(
    http: httpx.AsyncClient,
) -> None:
    """With the inflating threads busy, one caller (here: its address) holds at most
    MAX_INFLATING_PER_OWNER large compressed bodies in their queue; one more is refused at
    once with 503 and Retry-After in the route's error shape, and those queued are answered
    when the threads are free."""
    path = "/v2/models/doubler/versions/1/infer"
    body = BODY[:1] + b" " * (content_encoding.INLINE_BYTES + 1024) + BODY[1:]
    wire = gzip.compress(body)
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    release = threading.Event()
    blockers = [content_encoding._pool().submit(release.wait, 60)
                for _ in range(content_encoding.INFLATE_THREADS)]  # fmt: skip
    queued = [
        asyncio.create_task(http.post(path, content=wire, headers=headers))
        for _ in range(content_encoding.MAX_INFLATING_PER_OWNER)
    ]
    try:
        for _ in range(200):  # every queued body is in the pool's queue
            if content_encoding._QUEUE.total == len(queued):
                break
            await asyncio.sleep(0.01)
        assert content_encoding._QUEUE.total == len(queued)
        refused = await http.post(path, content=wire, headers=headers)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "compressed bodies" in refused.json()["error"]
    finally:
        release.set()
        for blocker in blockers:
            await asyncio.wrap_future(blocker)
    answers = await asyncio.gather(*queued)  # inflated in turn, and answered
    assert [a.status_code for a in answers] == [200] * len(queued), [a.text for a in answers]
