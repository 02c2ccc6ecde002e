"""A node believes the tenant its gateway names (issue 15) only from the admin key, the
cluster's gateway credential: through a real gRPC server, a call with the admin key and
``modelgate-tenant`` takes that tenant's turn in the batcher (``Timing.tenant`` and
``weight`` as the runtime sees them) and counts towards that tenant's fair share; the
same metadata on a tenant's own key is ignored, and malformed metadata from the gateway
is INVALID_ARGUMENT, never INTERNAL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.serving.ports import Timing
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.api.test_queue_shedding import _controller

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + secrets.token_hex(12)


class Recording:
    """The version's runtime, noting each call's tenant and weight."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.seen: list[tuple[str | None, float]] = []

    async def infer(self, inputs: Any, timing: Timing | None = None) -> Any:
        assert timing is not None
        self.seen.append((timing.tenant, timing.weight))
        return await self.runtime.infer(inputs, timing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path_factory.mktemp("gwtenant"),
        auth="required",
        admin_key=SecretStr(ADMIN),
        shed_queue_target_ms=5_000,  # shares counted, never shedding here
        shed_queue_share_half_life_seconds=600,
    ) as running:
        yield running


@pytest.fixture
def recording(server: Server) -> Iterator[Recording]:
    assert server.components is not None
    loaded = server.components.service.registry.get("doubler", None)
    assert loaded is not None
    original = loaded.runtime
    recording = Recording(original)
    loaded.runtime = recording  # type: ignore[assignment]
    try:
        yield recording
    finally:
        loaded.runtime = original


async def _tenant_key(server: Server) -> tuple[str, str]:
    url = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        plan = await c.post("/admin/plans", json={"name": "p40", "requests_per_second": 40})
        assert plan.status_code == 201, plan.text
        tenant = await c.post("/admin/tenants", json={"name": "acme", "plan": "p40"})
        assert tenant.status_code == 201, tenant.text
        key = await c.post(
            f"/admin/tenants/{tenant.json()['id']}/keys", json={"name": "k", "scopes": ["infer"]}
        )
        assert key.status_code == 201, key.text
        return str(tenant.json()["id"]), str(key.json()["secret"])


def _infer(port: int, key: str, **metadata: str) -> grpc.StatusCode:
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    sent = [("authorization", f"Bearer {key}"), *metadata.items()]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=10, metadata=sent)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _named(tenant: str, weight: str = "7.0", priority: str = "2") -> dict[str, str]:
    return {"modelgate-tenant": tenant, "modelgate-weight": weight, "modelgate-priority": priority}


async def test_the_gateways_call_takes_the_named_tenants_turn_and_share(
    server: Server, recording: Recording
) -> None:
    port = server.grpc_port
    assert await asyncio.to_thread(_infer, port, ADMIN, **_named("gw-tenant")) == grpc.StatusCode.OK
    assert await asyncio.to_thread(_infer, port, ADMIN) == grpc.StatusCode.OK  # names none
    assert recording.seen == [("gw-tenant", 7.0), ("*", 1.0)]
    shares = _controller(server).shares
    assert "gw-tenant" in shares.shares()
    assert shares.fair_shares()["gw-tenant"] == pytest.approx(7.0 / 8.0)  # weights 7 and 1


async def test_a_tenant_key_cannot_pose_as_another_tenant(
    server: Server, recording: Recording
) -> None:
    tenant_id, key = await _tenant_key(server)
    port = server.grpc_port
    assert await asyncio.to_thread(_infer, port, key, **_named("victim", "1000")) == (
        grpc.StatusCode.OK
    )
    # malformed metadata on a tenant's key is not even read
    assert await asyncio.to_thread(_infer, port, key, **_named("", "nan", "x")) == (
        grpc.StatusCode.OK
    )
    assert recording.seen == [(tenant_id, 40.0), (tenant_id, 40.0)]
    assert "victim" not in _controller(server).shares.shares()


@pytest.mark.parametrize(
    "metadata",
    [
        _named("t", weight="nan"),
        _named("t", weight="1e12"),
        _named("t", weight="-1"),
        _named("t", priority="12"),
        _named("t" * 200),
        _named("*"),
    ],
)
async def test_malformed_metadata_from_the_gateway_is_invalid_argument(
    server: Server, recording: Recording, metadata: dict[str, str]
) -> None:
    code = await asyncio.to_thread(_infer, server.grpc_port, ADMIN, **metadata)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert recording.seen == []
