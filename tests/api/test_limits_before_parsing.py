"""Limits before parsing (issue 16, finding 2): every route that takes a body refuses one over
its limit with 413 in its protocol's own shape, from ``Content-Length`` and while a chunked
body streams; ``/admin`` authenticates from the headers before it reads a body; requests
without a credential (or with a bad one) count against their address on ``/admin`` and
``/oauth/token`` as on the other routes, and a blocked address is refused before any look-up.
gRPC refuses metadata over ``grpc_max_metadata_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from modelgate.core.access.keys import issue_key
from modelgate.identity.jwt import generate_signing_key
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + secrets.token_hex(12)
AUTH = {"Authorization": f"Bearer {ADMIN}"}
#: the limits of this module's server: small, so that the bodies stay small
INFERENCE_LIMIT = 4096
ADMIN_LIMIT = 2048
OAUTH_LIMIT = 16 * 1024
METADATA_LIMIT = 4096


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path_factory.mktemp("limits"),
        auth="required",
        admin_key=SecretStr(ADMIN),
        jwt_issuer="https://modelgate.test",
        jwt_signing_key=SecretStr(generate_signing_key("ES256")),
        max_body_bytes=INFERENCE_LIMIT,
        admin_max_body_bytes=ADMIN_LIMIT,
        grpc_max_metadata_bytes=METADATA_LIMIT,
    ) as running:
        yield running


def _url(server: Server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


#: (path, content type, limit, the error body's shape)
ROUTES = [
    ("/admin/tenants", "application/json", ADMIN_LIMIT, "admin"),
    ("/v2/repository/index", "application/json", ADMIN_LIMIT, "oip"),
    ("/oauth/token", "application/x-www-form-urlencoded", OAUTH_LIMIT, "oauth"),
    ("/v1/jobs", "application/json", INFERENCE_LIMIT, "openai"),
    ("/v1/feedback", "application/json", INFERENCE_LIMIT, "openai"),
    ("/v1/embeddings", "application/json", INFERENCE_LIMIT, "openai"),
    ("/v2/models/doubler/infer", "application/json", INFERENCE_LIMIT, "oip"),
]


def _assert_shape(shape: str, body: dict[str, Any]) -> None:
    if shape == "openai":
        assert set(body["error"]) >= {"message", "type", "code"}, body
        assert "bytes" in body["error"]["message"]
    elif shape == "oauth":
        assert body["error"] == "invalid_request", body
        assert "bytes" in body["error_description"]
    else:  # OIP and the admin API: {"error": "<message>"}
        assert isinstance(body["error"], str) and "bytes" in body["error"], body


@pytest.mark.parametrize(("path", "content_type", "limit", "shape"), ROUTES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_routes_limit_is_refused_413_in_its_shape(
    server: Server, path: str, content_type: str, limit: int, shape: str, framing: str
) -> None:
    body = b"a" * (limit + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    headers = {**AUTH, "content-type": content_type}
    async with httpx.AsyncClient(base_url=_url(server), timeout=30) as client:
        content = body if framing == "content-length" else chunks()
        response = await client.post(path, content=content, headers=headers)
        # a body just within the limit is not refused for its size
        within = await client.post(path, content=body[:limit], headers=headers)

    assert response.status_code == 413, response.text
    _assert_shape(shape, response.json())
    assert within.status_code != 413


async def test_admin_answers_401_from_the_headers_without_waiting_for_the_body(
    server: Server,
) -> None:
    # 50 MiB announced, not one byte of it sent: the answer cannot wait for the body
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(
        b"POST /admin/tenants HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 52428800\r\n\r\n"
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 10)  # read() ends: the server closed
    finally:
        writer.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"connection: close" in head.lower()
    assert b'"error"' in body


async def test_admin_answers_413_from_content_length_before_the_body(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(
        b"POST /admin/tenants HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + ADMIN.encode() + b"\r\ncontent-length: 52428800\r\n\r\n"
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_admin_docs_need_no_credential(server: Server) -> None:
    async with httpx.AsyncClient(base_url=_url(server), timeout=30) as client:
        assert (await client.get("/admin/openapi.json")).status_code == 200
        assert (await client.get("/admin/tenants")).status_code == 401


# -- the abuse throttle counts requests without credentials ---------------------------------


@contextlib.asynccontextmanager
async def _throttled(tmp_path: Path) -> AsyncIterator[tuple[Server, list[str]]]:
    """A server that blocks an address at its 3rd refused or missing credential, trusting
    X-Forwarded-For from 127.0.0.1 so that each test picks addresses of its own; and the
    key prefixes it looked up."""
    async with running_server(
        tmp_path,
        auth="required",
        admin_key=SecretStr(ADMIN),
        key_cache_seconds=0,
        jwt_issuer="https://modelgate.test",
        jwt_signing_key=SecretStr(generate_signing_key("ES256")),
        abuse_slow_after=100,
        abuse_auth_failures_per_ip=3,
        forwarded_allow_ips="127.0.0.1",
    ) as running:
        components = running.components
        assert components is not None and components.state is not None
        store = components.state.identity
        lookups: list[str] = []
        find_key = store.find_key

        async def counted_find_key(prefix: str) -> Any:
            lookups.append(prefix)
            return await find_key(prefix)

        store.find_key = counted_find_key  # type: ignore[method-assign]
        yield running, lookups


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/tenants", b""),
        ("POST", "/admin/tenants", b'{"name": "x", "plan": "basic"}'),
        ("POST", "/oauth/token", b"grant_type=client_credentials"),  # no client credentials
    ],
)
async def test_requests_without_credentials_get_the_address_blocked(
    tmp_path: Path, method: str, path: str, body: bytes
) -> None:
    here = {"X-Forwarded-For": "203.0.113.30"}
    async with (
        _throttled(tmp_path) as (server, lookups),
        httpx.AsyncClient(base_url=_url(server), timeout=30) as client,
    ):
        statuses = [
            (await client.request(method, path, headers=here, content=body)).status_code
            for _ in range(3)
        ]
        blocked = await client.get("/admin/tenants", headers={**here, **AUTH})
        # a real key from the blocked address is refused before it is looked up
        key_like = {**here, "Authorization": f"Bearer {issue_key().secret}"}
        refused = await client.get("/v2/models/doubler", headers=key_like)
        elsewhere = await client.get("/admin/tenants", headers=AUTH)

    assert statuses == [401, 401, 401]
    assert blocked.status_code == 429 and "address" in blocked.json()["error"]
    assert refused.status_code == 429
    assert lookups == []
    assert elsewhere.status_code == 200


async def test_bad_keys_at_admin_get_the_address_blocked_before_any_lookup(
    tmp_path: Path,
) -> None:
    here = {"X-Forwarded-For": "203.0.113.31"}
    async with (
        _throttled(tmp_path) as (server, lookups),
        httpx.AsyncClient(base_url=_url(server), timeout=30) as client,
    ):
        for _ in range(3):
            bad = {**here, "Authorization": f"Bearer {issue_key().secret}"}
            assert (await client.post("/admin/tenants", headers=bad, json={})).status_code == 401
        looked_up = len(lookups)
        bad = {**here, "Authorization": f"Bearer {issue_key().secret}"}
        refused = await client.post("/admin/tenants", headers=bad, json={})

    assert refused.status_code == 429
    assert looked_up == 3
    assert len(lookups) == looked_up  # the 4th guess was not looked up


# -- gRPC -------------------------------------------------------------------------------------


async def test_grpc_refuses_metadata_over_the_limit(server: Server) -> None:
    # between this server's limit and gRPC's default ones (8 KiB soft, 16 KiB hard)
    small, big = METADATA_LIMIT // 2, METADATA_LIMIT + 2048
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ok = await health.Check(health_pb2.HealthCheckRequest(), metadata=(("x-pad", "p" * small),))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health.Check(health_pb2.HealthCheckRequest(), metadata=(("x-pad", "p" * big),))

    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value


async def test_an_admin_request_looks_its_key_up_once(tmp_path: Path) -> None:
    """RestApp authenticates /admin before the body; the admin app takes that principal
    rather than looking the same key up again (two queries per call without a key cache)."""
    async with (
        _throttled(tmp_path) as (server, lookups),
        httpx.AsyncClient(base_url=_url(server), timeout=30) as client,
    ):
        plan = await client.post("/admin/plans", headers=AUTH, json={"name": "once"})
        assert plan.status_code == 201, plan.text
        tenant = await client.post(
            "/admin/tenants", headers=AUTH, json={"name": "once", "plan": "once"}
        )
        assert tenant.status_code == 201, tenant.text
        tid = tenant.json()["id"]
        key = await client.post(
            f"/admin/tenants/{tid}/keys", headers=AUTH, json={"name": "k", "scopes": ["keys:admin"]}
        )
        assert key.status_code == 201, key.text
        secret = key.json()["secret"]
        before = len(lookups)
        listed = await client.get(
            f"/admin/tenants/{tid}/keys", headers={"Authorization": f"Bearer {secret}"}
        )
    assert listed.status_code == 200, listed.text
    assert len(lookups) - before == 1
