"""gRPC counts the same client as REST behind a proxy (issue 16, finding 5): a trusted
peer's ``x-forwarded-for`` metadata names the client the abuse throttle counts; from any
other peer, and by default, the metadata is ignored and the peer is counted."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.access.keys import issue_key
from tests.api.conftest import running_server

ADMIN = "admin-" + secrets.token_hex(12)


async def _metadata(stub: Any, *metadata: tuple[str, str]) -> grpc.StatusCode:
    try:
        await stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name="doubler"), metadata=metadata
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("trusted", [True, False])
async def test_grpc_counts_the_forwarded_client_only_from_a_trusted_peer(
    tmp_path: Path, trusted: bool
) -> None:
    settings: dict[str, Any] = {
        "auth": "required",
        "admin_key": SecretStr(ADMIN),
        "abuse_slow_after": 100,
        "abuse_auth_failures_per_ip": 3,
    }
    if trusted:
        settings["forwarded_allow_ips"] = "127.0.0.1"
    async with (
        running_server(tmp_path, **settings) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        guesser = ("x-forwarded-for", "203.0.113.50")
        for _ in range(3):
            bad = ("authorization", f"Bearer {issue_key().secret}")
            assert await _metadata(stub, bad, guesser) == grpc.StatusCode.UNAUTHENTICATED
        admin = ("authorization", f"Bearer {ADMIN}")
        from_the_guesser = await _metadata(stub, admin, guesser)
        from_the_proxy = await _metadata(stub, admin)

    assert from_the_guesser == grpc.StatusCode.RESOURCE_EXHAUSTED  # blocked either way
    # trusted: the guesser's address was blocked, not the proxy's (everyone's)
    expected = grpc.StatusCode.OK if trusted else grpc.StatusCode.RESOURCE_EXHAUSTED
    assert from_the_proxy == expected
