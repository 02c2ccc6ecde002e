"""The real ``tritonclient.grpc`` clients (asyncio and sync) against the in-process server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from modelgate.server import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def triton_client(server: Server) -> AsyncIterator[Any]:
    client = triton_aio.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    await client.close()


def doubler_input(x: np.ndarray[Any, Any]) -> Any:
    item = triton.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    return item


async def test_health_and_metadata(triton_client: Any) -> None:
    assert await triton_client.is_server_live()
    assert await triton_client.is_server_ready()
    assert await triton_client.is_model_ready("doubler", "1")
    meta = await triton_client.get_model_metadata("doubler", as_json=True)
    assert meta["versions"] == ["1", "2"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", ["-1", "4"])  # MessageToJson writes int64 as strings
    ]
    server = await triton_client.get_server_metadata()
    assert server.name == "modelgate"


async def test_infer_with_requested_outputs(triton_client: Any) -> None:
    x = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], dtype=np.float32)
    result = await triton_client.infer(
        "doubler",
        [doubler_input(x)],
        model_version="1",
        request_id="r1",
        outputs=[
            triton.InferRequestedOutput("y"),
            triton.InferRequestedOutput("scores", class_count=1),
        ],
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert result.as_numpy("scores").tolist() == [[b"4.000000:3:d"], [b"4.000000:0:a"]]
    response = result.get_response()
    assert (response.model_version, response.id) == ("1", "r1")


async def test_bytes_round_trip(triton_client: Any) -> None:
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"modelgate", b"oip"], dtype=object))
    result = await triton_client.infer("echo-text", [text])
    assert result.as_numpy("upper").tolist() == [b"MODELGATE", b"OIP"]
    assert result.as_numpy("length").tolist() == [9, 3]


async def test_errors_become_inference_server_exceptions(triton_client: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        await triton_client.infer("no-such-model", [doubler_input(np.ones((1, 4), np.float32))])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    bad = triton.InferInput("x", [1, 4], "FP64")
    bad.set_data_from_numpy(np.ones((1, 4), np.float64))
    with pytest.raises(InferenceServerException) as info:
        await triton_client.infer("doubler", [bad])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "FP64" in (info.value.message() or "")


async def test_stream_infer(triton_client: Any) -> None:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            x = np.full((1, 4), i, dtype=np.float32)
            yield {"model_name": "doubler", "inputs": [doubler_input(x)], "request_id": str(i)}

    answers = []
    async for result, error in triton_client.stream_infer(requests()):
        assert error is None
        answers.append((result.get_response().id, result.as_numpy("y").tolist()))
        if len(answers) == 3:
            break
    assert answers == [(str(i), [[3.0 * i] * 4]) for i in range(3)]


async def test_load_unload_and_repository_index(triton_client: Any) -> None:
    await triton_client.unload_model("echo-text")
    try:
        assert not await triton_client.is_model_ready("echo-text")
        index = await triton_client.get_model_repository_index(as_json=True)
        assert {"name": "echo-text", "state": "UNAVAILABLE"} in [
            {k: m.get(k) for k in ("name", "state")} for m in index["models"]
        ]
    finally:
        await triton_client.load_model("echo-text")
    assert await triton_client.is_model_ready("echo-text")
    await triton_client.load_model(
        "doubler", config=json.dumps({"version_policy": {"specific": [1]}})
    )
    try:
        result = await triton_client.infer("doubler", [doubler_input(np.ones((1, 4), np.float32))])
        assert result.as_numpy("y").tolist() == [[2.0] * 4]
    finally:
        await triton_client.load_model("doubler")


async def test_statistics_and_config(triton_client: Any) -> None:
    before = await triton_client.get_inference_statistics("doubler", "2", as_json=True)
    count = int(before["model_stats"][0].get("inference_count", 0))
    await triton_client.infer("doubler", [doubler_input(np.ones((2, 4), np.float32))])
    after = await triton_client.get_inference_statistics("doubler", "2", as_json=True)
    assert int(after["model_stats"][0]["inference_count"]) == count + 2
    config = await triton_client.get_model_config("doubler", as_json=True)
    assert config["config"]["name"] == "doubler"
    assert config["config"]["max_batch_size"] == 8
    assert config["config"]["input"][0]["data_type"] == "TYPE_FP32"


async def test_sync_client(server: Server) -> None:
    """The blocking client most users start with, on its own thread."""

    def run() -> tuple[bool, list[list[float]]]:
        with triton.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
            x = np.arange(4, dtype=np.float32).reshape(1, 4)
            result = client.infer("doubler", [doubler_input(x)])
            return client.is_server_ready(), result.as_numpy("y").tolist()

    ready, y = await asyncio.to_thread(run)
    assert ready
    assert y == [[0.0, 3.0, 6.0, 9.0]]
