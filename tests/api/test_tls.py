"""TLS: REST and gRPC served with a self-signed certificate the test makes, and real clients
that verify it (and refuse to talk when they cannot)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server import Server
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelgate test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = _self_signed(folder)
    server = Server(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=folder / "data",
            http_port=0,
            grpc_port=0,
            auth="off",
            tls_certfile=certfile,
            tls_keyfile=keyfile,
        )
    )
    task = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield server, certfile
    server.request_stop()
    await task


async def test_rest_over_verified_tls(tls_server: tuple[Server, Path]) -> None:
    server, certfile = tls_server
    context = ssl.create_default_context(cafile=str(certfile))
    async with httpx.AsyncClient(verify=context) as client:
        response = await client.get(f"https://127.0.0.1:{server.http_port}/v2/health/ready")
    assert response.status_code == 200
    async with httpx.AsyncClient() as client:  # the system's CAs do not know this certificate
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{server.http_port}/v2/health/ready")


async def test_grpc_over_verified_tls(tls_server: tuple[Server, Path]) -> None:
    server, certfile = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=certfile.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.grpc_port}", credentials) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        live = await stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
    assert live.live
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5)


async def test_half_a_tls_configuration_is_refused(tmp_path: Path) -> None:
    certfile, _ = _self_signed(tmp_path)
    with pytest.raises(ValidationError):
        Settings(tls_certfile=certfile)
    with pytest.raises(ValidationError):
        Settings(tls_certfile=certfile, tls_keyfile=tmp_path / "missing.pem")


async def test_a_gateway_calls_its_node_over_tls(tmp_path: Path) -> None:
    """The node serves gRPC over TLS; a gateway trusting its CA reaches it, a gateway
    without the CA cannot (no plaintext fallback)."""
    from tests.api.conftest import running_server

    certfile, keyfile = _self_signed(tmp_path)
    row = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    async with running_server(
        tmp_path / "node", role="node", tls_certfile=certfile, tls_keyfile=keyfile
    ) as node:
        nodes = f"127.0.0.1:{node.grpc_port}"
        async with running_server(
            tmp_path / "gateway", role="gateway", nodes=nodes, node_tls_ca_file=certfile
        ) as gateway:
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"http://127.0.0.1:{gateway.http_port}/v2/models/doubler/infer", json=row
                )
            assert answer.status_code == 200, answer.text
        async with running_server(tmp_path / "plain", role="gateway", nodes=nodes) as plain:
            async with httpx.AsyncClient() as client:
                refused = await client.post(
                    f"http://127.0.0.1:{plain.http_port}/v2/models/doubler/infer", json=row
                )
            assert refused.status_code == 404  # the node never answered: no models known
