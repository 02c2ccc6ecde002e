"""Access control end to end, REST and gRPC: a table of credentials against routes, with the
real SQLite identity store. No credential, a bad one, or another tenant's never gets data."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import orjson
import pytest
import pytest_asyncio
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.api.openai.embeddings import openai_error
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.server import Server
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "x" * 24
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class World:
    server: Server
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


async def _key(
    world_keys: dict[str, str],
    store: object,
    name: str,
    tenant: str,
    scopes: tuple[str, ...],
    **fields: object,
) -> None:
    issued = issue_key()
    now = datetime.now(UTC)
    record = ApiKeyRecord(
        id=f"key_{name}",
        tenant_id=tenant,
        name=name,
        prefix=issued.prefix,
        key_hash=issued.key_hash,
        scopes=scopes,
        created_at=now,
        **fields,
    )  # type: ignore[arg-type]
    await store.create_key(record)  # type: ignore[attr-defined]
    world_keys[name] = issued.secret


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("access")
    repository = root / "models"
    shutil.copytree(FIXTURE_MODELS, repository)
    private = repository / "acme-only"
    shutil.copytree(repository / "doubler", private)
    manifest = yaml.safe_load((private / "model.yaml").read_text())
    manifest["tenants"] = ["ten_acme"]
    (private / "model.yaml").write_text(yaml.safe_dump(manifest))
    settings = Settings(
        model_repository=repository,
        data_dir=root / "data",
        http_port=0,
        grpc_port=0,
        auth="required",
        admin_key=ADMIN,
        key_cache_seconds=0,
    )
    server = Server(settings)
    task = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert server.components is not None and server.components.state is not None
    store = server.components.state.identity
    await store.create_plan(Plan(name="basic"))
    await store.create_plan(Plan(name="tiny", requests_per_second=0.01, burst=3))
    now = datetime.now(UTC)
    for tenant, plan in (
        ("acme", "basic"),
        ("globex", "basic"),
        ("small", "tiny"),
        ("small2", "tiny"),
    ):
        await store.create_tenant(
            Tenant(id=f"ten_{tenant}", name=tenant, plan=plan, created_at=now)
        )
    keys: dict[str, str] = {}
    await _key(keys, store, "acme", "ten_acme", ("infer", "models:read"))
    await _key(keys, store, "globex", "ten_globex", ("infer", "models:read"))
    await _key(keys, store, "infer_only", "ten_acme", ("infer",))
    await _key(keys, store, "doubler_only", "ten_acme", ("infer:doubler",))
    await _key(keys, store, "revoked", "ten_acme", ("infer",), revoked_at=now - timedelta(1))
    await _key(keys, store, "expired", "ten_acme", ("infer",), expires_at=now - timedelta(1))
    await _key(keys, store, "small", "ten_small", ("infer",))
    await _key(keys, store, "small2", "ten_small2", ("infer",))
    keys["admin"] = ADMIN
    keys["malformed"] = "mg_live_short"
    keys["unknown"] = issue_key().secret
    yield World(server, keys)
    server.request_stop()
    await task


# (credential, method, path, expected REST status)
CASES = [
    (None, "POST", "/v2/models/doubler/infer", 401),
    ("malformed", "POST", "/v2/models/doubler/infer", 401),
    ("unknown", "POST", "/v2/models/doubler/infer", 401),
    ("revoked", "POST", "/v2/models/doubler/infer", 401),
    ("expired", "POST", "/v2/models/doubler/infer", 401),
    ("acme", "POST", "/v2/models/doubler/infer", 200),
    ("acme", "POST", "/v2/models/acme-only/infer", 200),
    ("globex", "POST", "/v2/models/acme-only/infer", 404),
    ("globex", "GET", "/v2/models/acme-only", 404),
    ("globex", "GET", "/v2/models/acme-only/ready", 404),
    ("globex", "GET", "/v2/models/acme-only/stats", 404),
    ("globex", "POST", "/v2/repository/models/acme-only/load", 404),
    ("acme", "POST", "/v2/repository/models/doubler/unload", 403),
    ("infer_only", "GET", "/v2/models/doubler", 403),
    ("doubler_only", "POST", "/v2/models/doubler/infer", 200),
    ("doubler_only", "POST", "/v2/models/acme-only/infer", 404),
    ("admin", "POST", "/v2/models/acme-only/infer", 200),
    ("admin", "GET", "/v2/models/acme-only/config", 200),
    (None, "GET", "/v2/health/live", 200),
    (None, "GET", "/v2/health/ready", 200),
    (None, "GET", "/v2/models/doubler", 401),
    (None, "GET", "/v1/models", 401),
    (None, "POST", "/v2/repository/index", 401),
]


@pytest.mark.parametrize(("who", "method", "path", "status"), CASES)
async def test_rest_access_table(
    world: World, who: str | None, method: str, path: str, status: int
) -> None:
    headers = {"Authorization": f"Bearer {world.keys[who]}"} if who else {}
    async with httpx.AsyncClient(base_url=world.url) as client:
        body = ROW if path.endswith("/infer") else None
        response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if status == 404:  # exactly what an unknown model answers: existence does not leak
        assert response.json() == {"error": "unknown model 'acme-only'"}


_GRPC_CODES = {
    200: grpc.StatusCode.OK,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
}


@pytest.mark.parametrize(
    ("who", "method", "path", "status"), [c for c in CASES if c[2].endswith("/infer")]
)
async def test_grpc_access_table(
    world: World, who: str | None, method: str, path: str, status: int
) -> None:
    model = path.split("/")[3]
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    metadata = (("authorization", f"Bearer {world.keys[who]}"),) if who else ()
    async with grpc.aio.insecure_channel(world.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            await stub.ModelInfer(request, metadata=metadata)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
    assert code == _GRPC_CODES[status]


async def test_x_api_key_header_works_too(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.url) as client:
        response = await client.post(
            "/v2/models/doubler/infer", json=ROW, headers={"x-api-key": world.keys["acme"]}
        )
    assert response.status_code == 200


async def test_model_lists_only_show_what_a_tenant_may_see(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.url) as client:
        for who, sees_private in (("acme", True), ("globex", False)):
            headers = {"Authorization": f"Bearer {world.keys[who]}"}
            models = (await client.get("/v1/models", headers=headers)).json()["data"]
            index = (await client.post("/v2/repository/index", headers=headers)).json()
            assert ("acme-only" in {m["id"] for m in models}) is sees_private
            assert ("acme-only" in {r["name"] for r in index}) is sees_private


async def test_openai_routes_answer_401_in_openai_shape(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.url) as client:
        response = await client.post("/v1/embeddings", json={"model": "doubler", "input": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_keys_never_reach_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=world.url) as client:
        for who in ("acme", "revoked", "unknown", "admin"):
            await client.post(
                "/v2/models/doubler/infer",
                json=ROW,
                headers={"Authorization": f"Bearer {world.keys[who]}"},
            )
    text = caplog.text
    for who in ("acme", "revoked", "unknown", "admin"):
        assert world.keys[who] not in text


async def test_a_tenants_plan_limit_answers_429_with_rate_limit_headers(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.keys['small']}"}
    async with httpx.AsyncClient(base_url=world.url) as client:
        answers = [
            await client.post("/v2/models/doubler/infer", json=ROW, headers=headers)
            for _ in range(5)
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert int(refused.headers["retry-after"]) >= 60
    assert "rate limit" in refused.json()["error"]


async def test_openai_routes_answer_rate_limits_in_openai_shape() -> None:
    error = ModelgateError(ErrorKind.RATE_LIMITED, "slow down", retry_after=2.0)
    status, body = openai_error(error)
    assert status == 429
    assert orjson.loads(body)["error"]["type"] == "rate_limit_exceeded"


async def test_a_rate_limited_grpc_call_is_resource_exhausted(world: World) -> None:
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    metadata = (("authorization", f"Bearer {world.keys['small2']}"),)
    codes = []
    async with grpc.aio.insecure_channel(world.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(4):
            try:
                await stub.ModelInfer(request, metadata=metadata)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                retry_after = dict(exc.trailing_metadata() or ()).get("retry-after")
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert retry_after is not None and int(retry_after) >= 60
