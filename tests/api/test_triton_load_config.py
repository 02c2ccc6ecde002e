"""tritonclient's ``load_model(config=...)`` with a Triton model configuration, on REST and
gRPC: the fields that map apply (the config route answers them back), what the config
route answers loads back as it is, and the rest is refused by name in the protocol's shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from modelgate.server import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")

TRITON_CONFIG = {
    "name": "doubler",
    "max_batch_size": 4,
    "dynamic_batching": {"max_queue_delay_microseconds": 100, "preferred_batch_size": [4]},
    "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
}


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["http", "grpc"])
async def triton(request: pytest.FixtureRequest, server: Server) -> AsyncIterator[Any]:
    if request.param == "http":
        client: Any = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    else:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    await client.load_model("doubler")  # back to its manifest
    await client.close()


async def config_of(triton: Any) -> dict[str, Any]:
    if isinstance(triton, triton_http.InferenceServerClient):
        config: dict[str, Any] = await triton.get_model_config("doubler")
        return config
    answer = await triton.get_model_config("doubler", as_json=True)
    return answer["config"]  # type: ignore[no-any-return]


async def test_a_triton_config_applies_what_maps(triton: Any) -> None:
    await triton.load_model("doubler", config=json.dumps(TRITON_CONFIG))
    config = await config_of(triton)
    assert int(config["max_batch_size"]) == 4
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 100
    assert [int(g["count"]) for g in config["instance_group"]] == [2]
    x = np.ones((3, 4), dtype=np.float32)
    module = triton_http if isinstance(triton, triton_http.InferenceServerClient) else triton_grpc
    item = module.InferInput("x", [3, 4], "FP32")
    item.set_data_from_numpy(x)
    result = await triton.infer("doubler", [item], "1")
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


async def test_the_config_route_answer_loads_back(triton: Any) -> None:
    """Triton's workflow: read the config, change a field, load it."""
    config = await config_of(triton)
    config["max_batch_size"] = 2
    await triton.load_model("doubler", config=json.dumps(config))
    assert int((await config_of(triton))["max_batch_size"]) == 2


async def test_fields_that_do_not_map_are_refused_by_name(triton: Any) -> None:
    config = {
        **TRITON_CONFIG,
        "optimization": {"graph": {"level": 1}},
        "sequence_batching": {},
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [5]}],
    }
    with pytest.raises(InferenceServerException) as info:
        await triton.load_model("doubler", config=json.dumps(config))
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    message = info.value.message()
    assert "'optimization' is not supported" in message
    assert "'sequence_batching' is not supported" in message
    assert "input 'x' dims [5]" in message
    assert "Extra inputs are not permitted" not in message
