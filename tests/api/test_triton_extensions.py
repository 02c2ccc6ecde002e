"""Triton's extensions that modelgate does not serve, called as tritonclient's users call
them: the same clear message on REST (501) and gRPC (UNIMPLEMENTED), never 404 "no route";
and a load with uploaded files refused alike on both."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from modelgate.server import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: (call, the words its message holds); each call runs on both clients
CALLS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("shm-status", lambda c: c.get_system_shared_memory_status(), "system shared memory"),
    (
        "shm-register",
        lambda c: c.register_system_shared_memory("r", "/k", 64),
        "system shared memory",
    ),
    ("shm-unregister", lambda c: c.unregister_system_shared_memory("r"), "system shared memory"),
    ("cuda-status", lambda c: c.get_cuda_shared_memory_status(), "CUDA shared memory"),
    ("cuda-unregister", lambda c: c.unregister_cuda_shared_memory(), "CUDA shared memory"),
    ("trace", lambda c: c.get_trace_settings(), "the trace extension"),
    ("model-trace", lambda c: c.get_trace_settings(model_name="doubler"), "the trace extension"),
    (
        "trace-update",
        lambda c: c.update_trace_settings(model_name="doubler", settings={"trace_rate": "1"}),
        "the trace extension",
    ),
    ("log", lambda c: c.get_log_settings(), "the logging extension"),
    ("log-update", lambda c: c.update_log_settings({"log_info": True}), "the logging extension"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["http", "grpc"])
async def triton(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Any]:
    if request.param == "http":
        client: Any = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    else:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    await client.close()


@pytest.mark.parametrize(
    ("call", "words"), [(c[1], c[2]) for c in CALLS], ids=[c[0] for c in CALLS]
)
async def test_each_unserved_extension_says_so_on_both_protocols(
    triton: Any, call: Callable[[Any], Any], words: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        await call(triton)
    assert f"{words} is not supported by modelgate" in info.value.message()
    assert "no route" not in info.value.message()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/systemsharedmemory/status"),
        ("GET", "/v2/systemsharedmemory/region/r/status"),
        ("POST", "/v2/systemsharedmemory/region/r/register"),
        ("POST", "/v2/cudasharedmemory/unregister"),
        ("GET", "/v2/trace/setting"),
        ("POST", "/v2/models/doubler/trace/setting"),
        ("GET", "/v2/models/doubler/versions/1/trace/setting"),
        ("GET", "/v2/logging"),
    ],
)
async def test_rest_answers_501_in_the_oip_shape(server: Server, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        response = await http.request(method, path, json={})
    assert response.status_code == 501
    assert "is not supported by modelgate" in response.json()["error"]


async def test_server_metadata_does_not_list_them(triton: Any) -> None:
    meta = await triton.get_server_metadata()
    extensions = meta["extensions"] if isinstance(meta, dict) else list(meta.extensions)
    assert not {"system_shared_memory", "cuda_shared_memory", "trace", "logging"} & set(extensions)


async def test_a_load_with_uploaded_files_is_refused_on_grpc(server: Server) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        with pytest.raises(InferenceServerException) as info:
            await client.load_model(
                "doubler", config='{"max_batch_size": 4}', files={"file:1/model.py": b"x = 1"}
            )
    finally:
        await client.close()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "uploaded files ('file:' parameters) is not supported by modelgate" in str(info.value)


async def test_a_load_with_uploaded_files_is_refused_on_rest(server: Server) -> None:
    """What tritonclient.http would send (its own ``files=`` cannot: it puts base64 bytes
    in ``json.dumps`` and raises TypeError before sending), as curl sends it."""
    body = {
        "parameters": {
            "config": '{"max_batch_size": 4}',
            "file:1/model.py": base64.b64encode(b"x = 1").decode(),
        }
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        response = await http.post("/v2/repository/models/doubler/load", json=body)
    assert response.status_code == 501
    assert (
        "uploaded files ('file:' parameters) is not supported by modelgate"
        in (response.json()["error"])
    )
