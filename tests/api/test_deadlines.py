"""Deadlines: a request whose caller's timeout (``X-Request-Timeout-Ms`` on REST, the call's
deadline on gRPC, or ``MODELGATE_REQUEST_TIMEOUT_SECONDS``) has passed before its work starts
is refused -- 504 / DEADLINE_EXCEEDED -- and never runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}
DOUBLER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(tmp_path_factory.mktemp("deadlines")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    url = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def _executions(http: httpx.AsyncClient) -> int:
    stats = (await http.get("/v2/models/slow-sum/stats")).json()["model_stats"]
    return sum(int(s["execution_count"]) for s in stats)


async def test_an_expired_deadline_answers_504_and_runs_nothing(http: httpx.AsyncClient) -> None:
    before = await _executions(http)
    answer = await http.post(
        "/v2/models/slow-sum/infer", json=SLOW, headers={"x-request-timeout-ms": "0"}
    )
    assert answer.status_code == 504, answer.text
    assert "deadline" in answer.json()["error"]
    assert await _executions(http) == before


async def test_requests_whose_deadline_passes_in_the_queue_never_run(
    http: httpx.AsyncClient,
) -> None:
    # slow-sum takes 50 ms a batch of at most 4 rows and queues at most 4 requests (more
    # answer 503): of a burst, those that may wait only 20 ms are dropped before they run.
    await http.post("/v2/models/slow-sum/infer", json=SLOW)  # loaded and warm
    before = await _executions(http)
    patient = [http.post("/v2/models/slow-sum/infer", json=SLOW) for _ in range(4)]
    hurried = [
        http.post("/v2/models/slow-sum/infer", json=SLOW, headers={"x-request-timeout-ms": "20"})
        for _ in range(8)
    ]
    answers = await asyncio.gather(*patient, *hurried)
    statuses = [a.status_code for a in answers]
    assert set(statuses[:4]) <= {200, 503} and 200 in statuses[:4]
    assert 504 in statuses[4:] and set(statuses[4:]) <= {200, 503, 504}
    ran = sum(1 for s in statuses if s == 200)
    # every execution served at least one answered request: none was spent on a dropped one
    assert await _executions(http) - before <= ran


async def test_a_generous_deadline_changes_nothing(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/v2/models/doubler/infer", json=DOUBLER, headers={"x-request-timeout-ms": "60000"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "9999999999"])
async def test_a_malformed_timeout_is_a_400(http: httpx.AsyncClient, value: str) -> None:
    answer = await http.post(
        "/v2/models/doubler/infer", json=DOUBLER, headers={"x-request-timeout-ms": value}
    )
    assert answer.status_code == 400 and "Timeout" in answer.json()["error"]


async def test_a_grpc_deadline_that_passes_in_the_queue_runs_nothing(
    server: Server, http: httpx.AsyncClient
) -> None:
    def request() -> Any:
        message = service_pb2.ModelInferRequest(model_name="slow-sum")
        tensor = message.inputs.add(name="x", datatype="INT32", shape=[1, 2])
        tensor.contents.int_contents.extend([1, 2])
        return message

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request())
        before = await _executions(http)
        busy = [stub.ModelInfer(request()) for _ in range(4)]
        late = [stub.ModelInfer(request(), timeout=0.02) for _ in range(8)]
        results = await asyncio.gather(*busy, *late, return_exceptions=True)
    codes = [
        r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results
    ]
    assert grpc.StatusCode.OK in codes[:4]
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes[4:]
    await asyncio.sleep(0.3)  # anything still queued has been dropped or run by now
    assert await _executions(http) - before <= codes.count(grpc.StatusCode.OK)


async def test_the_default_timeout_applies_to_requests_without_one(tmp_path: Path) -> None:
    async with running_server(tmp_path, request_timeout_seconds=0.02) as running:
        url = f"http://127.0.0.1:{running.http_port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await client.post("/v2/models/slow-sum/infer", json=SLOW)
            answers = await asyncio.gather(
                *(client.post("/v2/models/slow-sum/infer", json=SLOW) for _ in range(12))
            )
    assert 504 in [a.status_code for a in answers]
