"""A flooding key is refused from the refusal memo, REST and gRPC (issue 15): the same 429 /
RESOURCE_EXHAUSTED answer as the full path, before its body is read; other tenants are
served; after its Retry-After it is admitted again; its 429s are logged at most once a
second with the count not logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.observability.logs import ACCESS_LOGGER, JsonFormatter
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "refusal-memo-admin-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"
#: a body the full path answers 400 (not JSON)
BAD_BODY = b"{this is not json"
#: what a REST refusal answers besides its body (the request id differs per request)
ANSWER_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
#: one request a second, no burst: a refusal's Retry-After is 1 s ("log": one in 100 s)
FLOODERS = ("rest", "body", "grpc", "log", "asgi")


@dataclass
class World:
    server: Server
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with running_server(
        Path(tmp_path_factory.mktemp("refusals")),
        auth="required",
        admin_key=SecretStr(ADMIN),
    ) as server:
        assert server.components is not None and server.components.state is not None
        store = server.components.state.identity
        await store.create_plan(Plan(name="one-a-second", requests_per_second=1.0, burst=1))
        await store.create_plan(Plan(name="roomy"))
        await store.create_plan(Plan(name="slow", requests_per_second=0.01, burst=1))
        now = datetime.now(UTC)
        keys = {}
        for name in (*FLOODERS, "calm"):
            plan = {"calm": "roomy", "log": "slow"}.get(name, "one-a-second")
            await store.create_tenant(Tenant(f"ten_{name}", name, plan, now))
            issued = issue_key()
            record = ApiKeyRecord(
                f"key_{name}", f"ten_{name}", name, issued.prefix, issued.key_hash, ("infer",), now
            )
            await store.create_key(record)
            keys[name] = issued.secret
        yield World(server, keys)


def _as(world: World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def _refused_metric(text: str, tenant: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "modelgate_refused_requests_total" and s.labels["tenant"] == tenant
    )


async def test_a_flooding_key_gets_the_same_429_before_its_body_is_read(world: World) -> None:
    calm, flood = _as(world, "calm"), _as(world, "rest")
    async with httpx.AsyncClient(base_url=world.url) as client:
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
        full = await client.post(INFER, json=ROW, headers=flood)  # the full path refuses
        memo = await client.post(INFER, json=ROW, headers=flood)  # the memo refuses
        unread = await client.post(INFER, content=BAD_BODY, headers=flood)  # 400 if read
        others = [(await client.post(INFER, json=ROW, headers=calm)).status_code for _ in range(5)]
        metrics = (await client.get("/metrics", headers=_as(world, "calm"))).text
        await asyncio.sleep(float(full.headers["retry-after"]) + 0.05)
        again = await client.post(INFER, json=ROW, headers=flood)
    assert full.status_code == memo.status_code == unread.status_code == 429
    assert "rate limit" in full.json()["error"]
    for answer in (memo, unread):
        assert answer.content == full.content
        assert [answer.headers.get(h) for h in ANSWER_HEADERS] == [
            full.headers.get(h) for h in ANSWER_HEADERS
        ]
        assert set(answer.headers) == set(full.headers)
    assert full.headers["retry-after"] == "1"
    assert others == [200] * 5  # another tenant is served throughout
    assert _refused_metric(metrics, "ten_rest") == 3  # every refusal counts, the memo's too
    assert again.status_code == 200  # after its Retry-After the key is admitted again


async def test_a_memo_refusal_never_reads_the_body(world: World) -> None:
    """Straight through the ASGI app, with a ``receive`` that fails the test if asked."""
    assert world.server.components is not None
    app = world.server.components.rest_app
    assert app is not None
    flood = _as(world, "asgi")
    async with httpx.AsyncClient(base_url=world.url) as client:
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
        full = await client.post(INFER, json=ROW, headers=flood)
    assert full.status_code == 429
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": INFER,
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"authorization", flood["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"70"),
        ],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 429
    assert sent[1]["body"] == full.content


async def test_a_large_unread_body_closes_the_connection(world: World) -> None:
    flood = _as(world, "body")
    big = b"x" * (256 * 1024)
    async with httpx.AsyncClient(base_url=world.url) as client:
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 429
        refused = await client.post(INFER, content=big, headers=flood)
    assert refused.status_code == 429
    assert refused.headers["connection"] == "close"  # the rest of the body is not worth reading


def _grpc_request(values: list[float]) -> Any:
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(values)
    return request


async def test_a_flooding_grpc_key_gets_the_same_status_before_its_tensors_are_read(
    world: World,
) -> None:
    good, bad = _grpc_request([1, 2, 3, 4]), _grpc_request([1, 2, 3])  # bad: 3 of 4 values
    flood = (("authorization", f"Bearer {world.keys['grpc']}"),)
    calm = (("authorization", f"Bearer {world.keys['calm']}"),)
    answers: list[tuple[Any, str | None, str | None]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def call(request: Any, metadata: Any) -> tuple[Any, str | None, str | None]:
            try:
                await stub.ModelInfer(request, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                trailing = dict(exc.trailing_metadata() or ())
                return exc.code(), exc.details(), trailing.get("retry-after")
            return grpc.StatusCode.OK, None, None

        for request in (good, good, good, bad):  # OK, the full path, the memo twice
            answers.append(await call(request, flood))
        others = [(await call(good, calm))[0] for _ in range(3)]
        await asyncio.sleep(1.05)
        again = await call(good, flood)
    assert answers[0][0] == grpc.StatusCode.OK
    full = answers[1]
    assert full[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in (full[1] or "")
    assert answers[2] == answers[3] == full  # the bad tensor is never decoded (else 3)
    assert full[2] == "1"
    assert others == [grpc.StatusCode.OK] * 3
    assert again[0] == grpc.StatusCode.OK


async def test_a_floods_429s_are_logged_at_most_once_a_second(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    flood = _as(world, "log")
    async with httpx.AsyncClient(base_url=world.url) as client:
        assert (await client.post(INFER, json=ROW, headers=flood)).status_code == 200
        statuses = [
            (await client.post(INFER, json=ROW, headers=flood)).status_code for _ in range(10)
        ]
        await asyncio.sleep(1.0)
        late = await client.post(INFER, json=ROW, headers=flood)
    assert statuses == [429] * 10
    assert late.status_code == 429
    assert world.server.components is not None and world.server.components.requests is not None
    world.server.components.requests.flush()
    formatter = JsonFormatter()
    lines = [
        json.loads(formatter.format(r))
        for r in caplog.records
        if r.name == ACCESS_LOGGER and r.getMessage() == "request"
    ]
    refused = [line for line in lines if line["tenant"] == "ten_log" and line["status"] == 429]
    # the first refusal's line, then the one a second later that says 9 were not written
    assert [line.get("suppressed") for line in refused] == [0, 9]
