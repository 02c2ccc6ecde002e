"""One log line per request, over REST and gRPC: ids, trace id, tenant, model, status, latency;
the request id in REST answers; and no credential in any line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.keys import issue_key
from modelgate.observability.logs import ACCESS_LOGGER, JsonFormatter, TextFormatter
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "request-log-admin-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        Path(tmp_path_factory.mktemp("requests")), auth="required", admin_key=SecretStr(ADMIN)
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def stub(server: Server) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _records(server: Server, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    assert server.components is not None and server.components.requests is not None
    server.components.requests.flush()
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


async def _settled(
    server: Server, caplog: pytest.LogCaptureFixture, expected: int
) -> list[logging.LogRecord]:
    """The access records logged so far, once ``expected`` of them are, or after 10 s: a
    gRPC call's line is written when its answer has gone, so the client may hold the answer
    before the line exists (on a loaded machine, past the test's next statement)."""
    deadline = time.monotonic() + 10
    records = _records(server, caplog)
    while len(records) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        records = _records(server, caplog)
    return records


async def _lines(
    server: Server, caplog: pytest.LogCaptureFixture, expected: int
) -> list[dict[str, Any]]:
    """The request lines logged so far (``expected`` of them awaited), as the JSON formatter
    writes them."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r))
        for r in await _settled(server, caplog, expected)
        if r.getMessage() == "request"
    ]


def _grpc_request(model: str = "doubler") -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    return request


async def test_a_rest_inference_is_one_line_with_its_ids(
    server: Server, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    response = await http.post(
        INFER,
        json=ROW,
        headers={
            "Authorization": f"Bearer {ADMIN}",
            "X-Request-Id": "rest-req-1",
            "traceparent": TRACEPARENT,
        },
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "rest-req-1"
    (line,) = await _lines(server, caplog, 1)
    assert line["latency_ms"] > 0
    del line["time"], line["latency_ms"]
    assert line == {
        "level": "info",
        "logger": ACCESS_LOGGER,
        "message": "request",
        "request_id": "rest-req-1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",  # the client's, with tracing off
        "protocol": "rest",
        "method": "POST",
        "path": INFER,
        "status": 200,
        "tenant": "*",  # the bootstrap admin key's tenant
        "model": "doubler",
        "version": "2",  # the version that answered
    }


async def test_every_rest_answer_carries_a_request_id(
    server: Server, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    answers = [
        await http.get("/v2/health/live"),
        await http.post(INFER, json=ROW),  # 401
        await http.post(INFER, json=ROW, headers={**auth, "X-Request-Id": "bad id with spaces"}),
        await http.get("/v2/models/nope", headers=auth),  # 404
        await http.get("/admin/tenants", headers=auth),  # the admin app
        await http.get("/nowhere"),
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == len(ids) and "bad id with spaces" not in ids
    lines = await _lines(server, caplog, len(answers))
    assert [(line["request_id"], line["status"]) for line in lines] == [
        (i, a.status_code) for i, a in zip(ids, answers, strict=True)
    ]
    assert lines[1]["tenant"] is None and lines[2]["tenant"] == "*"
    assert lines[3]["model"] == "nope" and lines[4]["path"] == "/admin/tenants"


async def test_a_grpc_inference_is_one_line(
    server: Server, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    metadata = (
        ("authorization", f"Bearer {ADMIN}"),
        ("x-request-id", "grpc-req-1"),
        ("traceparent", TRACEPARENT),
    )
    await stub.ModelInfer(_grpc_request(), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ModelInfer(_grpc_request("nope"), metadata=metadata[:1])
    await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="doubler"), metadata=metadata)
    ok, missing, meta = await _lines(server, caplog, 3)
    assert ok["request_id"] == "grpc-req-1" and ok["trace_id"] == TRACEPARENT[3:35]
    assert (ok["protocol"], ok["method"], ok["status"]) == ("grpc", "ModelInfer", 0)
    assert ok["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (ok["tenant"], ok["model"], ok["version"]) == ("*", "doubler", "2")
    assert missing["status"] == grpc.StatusCode.NOT_FOUND.value[0] and missing["model"] == "nope"
    assert missing["request_id"] != ok["request_id"] and missing["trace_id"] is None
    assert (meta["method"], meta["status"], meta["model"]) == ("ModelMetadata", 0, "doubler")


async def test_no_credential_reaches_a_request_line(
    server: Server, http: httpx.AsyncClient, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    guessed = issue_key().secret
    secrets = [ADMIN, guessed, "not-even-a-key-but-still-secret"]
    for secret in secrets:
        await http.post(INFER, json=ROW, headers={"Authorization": f"Bearer {secret}"})
        await http.get("/admin/tenants", headers={"x-api-key": secret})
        await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "k", "client_secret": secret},
        )
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stub.ModelInfer(_grpc_request(), metadata=(("authorization", secret),))
    records = await _settled(server, caplog, 4 * len(secrets))
    assert len(records) == 4 * len(secrets)
    written = "\n".join(f.format(r) for r in records for f in (JsonFormatter(), TextFormatter()))
    for secret in secrets:
        assert secret not in written
        assert secret.rsplit("_", 1)[-1] not in written  # a key's secret part alone


async def test_a_grpc_stream_is_one_line(
    server: Server, stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    metadata = (("authorization", f"Bearer {ADMIN}"), ("x-request-id", "stream-1"))

    async def requests() -> AsyncIterator[Any]:
        for model in ("doubler", "nope", "doubler"):
            yield _grpc_request(model)

    answers = [a async for a in stub.ModelStreamInfer(requests(), metadata=metadata)]
    assert [bool(a.error_message) for a in answers] == [False, True, False]
    (line,) = await _lines(server, caplog, 1)
    assert (line["method"], line["request_id"], line["status"]) == (
        "ModelStreamInfer",
        "stream-1",
        0,
    )
    assert (line["tenant"], line["model"]) == ("*", "doubler")
