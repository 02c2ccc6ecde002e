"""Gateway replicas and a node behind a real HAProxy (Debian's 2.6, run by the test as
a throwaway process; tests/haproxy.py) configured with the shipped
``deploy/haproxy/haproxy.cfg``, as tests/e2e/test_nginx.py does for nginx:

- REST on the plain port and gRPC (h2c) on its own port reach the model, every gateway
  takes traffic, the client's ``X-Request-Id`` goes through and one is made when it sent
  none;
- gRPC streaming (``ModelStreamInfer``, one bidirectional stream, several requests) passes;
- the TLS port takes REST (HTTP/1.1) and gRPC (HTTP/2, by ALPN), told apart by content type;
- health: a gateway that reports not ready (SIGTERM, with a shutdown delay) is taken out by
  HAProxy's checks before it stops, and no request fails;
- killing a gateway (kill -9) under load answers no error: requests waiting at it are
  retried on another one by HAProxy, and a response it was writing at that instant
  (headers sent, body not) is cut off and retried by the client. The figures are printed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import queue
import re
import secrets
import signal
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import FIXTURE_MODELS, REDIS_URL, ROOT
from tests.e2e.conftest import RunningServer, free_port, start_server, stop_server
from tests.haproxy import running_haproxy

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NODE_KEY = "e2e-haproxy-node-key-" + "n" * 16
KEY = "e2e-haproxy-gateway-key-" + "g" * 16
AUTH = {"Authorization": f"Bearer {KEY}"}
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class Front:
    url: str
    grpc: str
    tls_address: str
    ca: Path
    gateways: list[RunningServer]
    log: Path


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: HAProxy's PEM (certificate and key), and
    the certificate alone for the clients to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelgate haproxy test")])
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
    public = cert.public_bytes(serialization.Encoding.PEM)
    secret = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "haproxy.pem").write_bytes(public + secret)
    (folder / "ca.pem").write_bytes(public)
    return folder / "haproxy.pem", folder / "ca.pem"


def render(gateways: list[RunningServer], ports: tuple[int, int, int], pem: Path) -> str:
    """The shipped configuration with only the replicas, the listen addresses and the
    certificate's path changed."""
    text = CONFIG.read_text()
    rest = "".join(f"    server gateway-{i} {g.http_address}\n" for i, g in enumerate(gateways))
    grpc = "".join(
        f"    server gateway-{i} {g.grpc_address} proto h2 check port {g.http_port}"
        " check-proto h1\n"
        for i, g in enumerate(gateways)
    )
    for backend, servers in (("modelgate_rest", rest), ("modelgate_grpc", grpc)):
        text, found = re.subn(
            rf"(backend {backend}\n(?:    (?!server ).*\n)+)(?:    server .*\n)+",
            lambda m, s=servers: m.group(1) + s,
            text,
        )
        assert found == 1, backend
    http_port, grpc_port, tls_port = ports
    replaced = [
        ("    bind :8080\n", f"    bind 127.0.0.1:{http_port}\n"),
        ("    bind :8081 proto h2\n", f"    bind 127.0.0.1:{grpc_port} proto h2\n"),
        ("    bind :8443 ssl crt /etc/haproxy/certs/modelgate.pem ",
         f"    bind 127.0.0.1:{tls_port} ssl crt {pem} "),
    ]  # fmt: skip
    for old, new in replaced:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def haproxy_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """Three gateways and a node behind HAProxy, for the module: the tests take gateways
    out one at a time (SIGTERM, then kill -9), and one is always left."""
    tmp_path = tmp_path_factory.mktemp("haproxy")
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    env = {
        "MODELGATE_REDIS_URL": REDIS_URL,
        "MODELGATE_REDIS_KEY_PREFIX": prefix,
        "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
    }
    servers: list[RunningServer] = []
    try:
        servers.append(
            start_server(
                FIXTURE_MODELS,
                tmp_path / "node",
                "--role",
                "node",
                "--node-id",
                "n1",
                env={**env, "MODELGATE_ADMIN_KEY": NODE_KEY},
            )
        )
        gateways = [
            start_server(
                FIXTURE_MODELS,
                tmp_path / f"gateway-{i}",
                "--role",
                "gateway",
                env={
                    **env,
                    "MODELGATE_ADMIN_KEY": KEY,
                    "MODELGATE_NODE_KEY": NODE_KEY,
                    # behind HAProxy, as deployed: its X-Forwarded-For names the client
                    "MODELGATE_FORWARDED_ALLOW_IPS": "127.0.0.1",
                    # not ready at once on SIGTERM, serving on while HAProxy notices
                    "MODELGATE_SHUTDOWN_DELAY_SECONDS": "3",
                },
            )
            for i in (1, 2, 3)
        ]
        servers.extend(gateways)
        ports = (free_port(), free_port(), free_port())
        pem, ca = _certificate(tmp_path / "tls")
        url = f"http://127.0.0.1:{ports[0]}"
        with running_haproxy(
            render(gateways, ports, pem), tmp_path / "haproxy", f"{url}/v2/health/ready"
        ):
            yield Front(
                url,
                f"127.0.0.1:{ports[1]}",
                f"127.0.0.1:{ports[2]}",
                ca,
                gateways,
                tmp_path / "haproxy" / "haproxy.log",
            )
    finally:
        for server in servers:
            stop_server(server)
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)


def _served(gateway: RunningServer) -> float:
    """Inference requests a gateway answered, from its /metrics."""
    if gateway.process.poll() is not None:
        return 0.0
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelgate_inference_requests_total{") and 'status="success"' in line
    )


def _tensor() -> Any:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    return tensor


def test_rest_grpc_streaming_and_tls_through_haproxy_reach_every_gateway(
    haproxy_front: Front,
) -> None:
    front = haproxy_front
    for _ in range(20):
        answer = httpx.post(
            f"{front.url}/v2/models/doubler/infer", json=ROW, headers=AUTH, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
    # HAProxy made the id (its format: hex of the client's address, 127.0.0.1, first)
    assert answer.headers["x-request-id"].startswith("7F000001"), answer.headers
    sent = httpx.post(
        f"{front.url}/v2/models/doubler/infer",
        json=ROW,
        headers={**AUTH, "X-Request-Id": "client-chose-this-1"},
        timeout=10,
    )
    assert sent.headers["x-request-id"] == "client-chose-this-1"

    headers = {"authorization": f"Bearer {KEY}"}
    client = grpcclient.InferenceServerClient(front.grpc)
    result = client.infer("doubler", [_tensor()], headers=headers)
    assert result.as_numpy("y").tolist() == [[3.0, 3.0, 3.0, 3.0]]
    # one bidirectional stream, several requests, each answered on it
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(
        callback=lambda result, error: answers.put((result, error)), headers=headers
    )
    for i in range(5):
        client.async_stream_infer("doubler", [_tensor()], request_id=str(i))
    streamed = [answers.get(timeout=10) for _ in range(5)]
    client.stop_stream()
    client.close()
    assert all(error is None for _, error in streamed), streamed
    assert sorted(r.get_response().id for r, _ in streamed) == [str(i) for i in range(5)]
    assert all(r.as_numpy("y").tolist() == [[3.0] * 4] for r, _ in streamed)
    assert all(_served(g) > 0 for g in front.gateways)

    # TLS: REST over HTTP/1.1 and gRPC over HTTP/2 on the one port
    context = ssl.create_default_context(cafile=str(front.ca))
    answer = httpx.post(
        f"https://{front.tls_address}/v2/models/doubler/infer",
        json=ROW,
        headers=AUTH,
        timeout=10,
        verify=context,
    )
    assert answer.status_code == 200 and answer.http_version == "HTTP/1.1", answer.text
    secure = grpcclient.InferenceServerClient(
        front.tls_address, ssl=True, root_certificates=str(front.ca)
    )
    result = secure.infer("doubler", [_tensor()], headers=headers)
    assert result.as_numpy("y").tolist() == [[3.0, 3.0, 3.0, 3.0]]
    secure.close()
    # and a client that will not trust the certificate is not served
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{front.tls_address}/v2/health/ready", timeout=10)


async def _load(url: str, seconds: float, action: Any) -> Counter[int | str]:
    """Eight clients posting inference for ``seconds``, ``action`` run meanwhile."""
    codes: Counter[int | str] = Counter()
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:

        async def worker() -> None:
            while time.monotonic() < stop:
                try:
                    answer = await http.post("/v2/models/doubler/infer", json=ROW)
                except httpx.TransportError:
                    # The killed gateway had sent this response's headers, not its body:
                    # HAProxy has forwarded them and cannot retry, so the client does
                    # (inference is idempotent), as the OIP and OpenAI SDKs do.
                    codes["cut"] += 1
                    continue
                codes[answer.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(8)), action())
    return codes


def test_haproxy_takes_a_stopping_gateway_out_before_it_stops(haproxy_front: Front) -> None:
    front = haproxy_front
    first = front.gateways[0]
    assert first.process.poll() is None

    async def drain() -> None:
        await asyncio.sleep(0.5)
        first.process.send_signal(signal.SIGTERM)  # not ready at once, serving 3 s more

    codes = asyncio.run(_load(front.url, 4.0, drain))
    print(f"\nSIGTERM of one of three gateways behind HAProxy under load: {dict(codes)}")
    assert set(codes) == {200}, "a request failed while a gateway was taken out"
    assert first.process.wait(timeout=30) == 0
    # taken out by the health check (its 503), in both backends, not by refused connections
    log = front.log.read_text()
    for backend in ("modelgate_rest", "modelgate_grpc"):
        assert f"{backend}/gateway-0 is DOWN, reason: Layer7 wrong status, code: 503" in log, log
    assert codes[200] > 50


def test_killing_a_gateway_behind_haproxy_under_load_answers_no_error(
    haproxy_front: Front,
) -> None:
    front = haproxy_front
    victim = front.gateways[1]
    assert victim.process.poll() is None

    async def kill() -> None:
        await asyncio.sleep(1.0)
        victim.process.kill()

    codes = asyncio.run(_load(front.url, 4.0, kill))
    print(f"\nkill -9 of one of the gateways behind HAProxy under load: {dict(codes)}")
    assert set(codes) <= {200, "cut"}, "HAProxy answered an error"
    assert codes["cut"] <= 8, "more responses cut than were in flight"
    assert codes[200] > 50
