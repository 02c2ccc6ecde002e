"""Two gateway replicas and a node behind a real nginx (Debian's, unpacked by the test and
run as a throwaway process) configured with the shipped ``deploy/nginx/modelgate.conf``:
REST and gRPC reach the model through nginx, both gateways take traffic, and killing one
gateway (kill -9) under load answers no error: requests waiting at it are retried on the other
one by nginx, and a response it was writing at that instant (headers sent, body not) is cut
off and retried by the client. The figure is printed."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient

from tests.conftest import FIXTURE_MODELS, REDIS_URL, ROOT
from tests.e2e.conftest import RunningServer, free_port, start_server, stop_server
from tests.nginx import running_nginx, temp_paths

CONFIG = ROOT / "deploy" / "nginx" / "modelgate.conf"
NODE_KEY = "e2e-nginx-node-key-" + "n" * 16
KEY = "e2e-nginx-gateway-key-" + "g" * 16
AUTH = {"Authorization": f"Bearer {KEY}"}
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def render(gateways: list[RunningServer], http_port: int, grpc_port: int, prefix: Path) -> str:
    """The shipped configuration with only the replicas, listen ports and throwaway paths
    changed."""
    text = CONFIG.read_text()
    rest = "".join(
        f"        server {g.http_address} max_fails=3 fail_timeout=5s;\n" for g in gateways
    )
    grpc = "".join(
        f"        server {g.grpc_address} max_fails=3 fail_timeout=5s;\n" for g in gateways
    )
    text, found = re.subn(
        r"(upstream modelgate_rest \{\n        least_conn;\n)(?:        server .*\n)+",
        lambda m: m.group(1) + rest,
        text,
    )
    assert found == 1
    text, found = re.subn(
        r"(upstream modelgate_grpc \{\n        least_conn;\n)(?:        server .*\n)+",
        lambda m: m.group(1) + grpc,
        text,
    )
    assert found == 1
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 8081 http2;", f"listen 127.0.0.1:{grpc_port} http2;")
    text = text.replace("http {\n", f"http {{\n    access_log off;\n{temp_paths(prefix)}\n", 1)
    return text


@pytest.fixture
def nginx_front(tmp_path: Path) -> Iterator[tuple[str, str, list[RunningServer]]]:
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
                    # behind nginx, as deployed: its X-Forwarded-For names the client
                    "MODELGATE_FORWARDED_ALLOW_IPS": "127.0.0.1",
                },
            )
            for i in (1, 2)
        ]
        servers.extend(gateways)
        http_port, grpc_port = free_port(), free_port()
        nginx_dir = tmp_path / "nginx"
        url = f"http://127.0.0.1:{http_port}"
        with running_nginx(
            render(gateways, http_port, grpc_port, nginx_dir), nginx_dir, f"{url}/v2/health/ready"
        ):
            yield url, f"127.0.0.1:{grpc_port}", gateways
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


def test_rest_and_grpc_through_nginx_reach_both_gateways_and_survive_losing_one(
    nginx_front: tuple[str, str, list[RunningServer]],
) -> None:
    url, grpc_address, gateways = nginx_front
    for _ in range(20):
        answer = httpx.post(f"{url}/v2/models/doubler/infer", json=ROW, headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
    assert "x-request-id" in answer.headers
    client = grpcclient.InferenceServerClient(grpc_address)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    result = client.infer("doubler", [tensor], headers={"authorization": f"Bearer {KEY}"})
    assert result.as_numpy("y").tolist() == [[3.0, 3.0, 3.0, 3.0]]
    client.close()
    served = [_served(g) for g in gateways]
    assert all(n > 0 for n in served), served

    async def load() -> Counter[int | str]:
        codes: Counter[int | str] = Counter()
        stop = time.monotonic() + 4.0
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:

            async def worker() -> None:
                while time.monotonic() < stop:
                    try:
                        answer = await http.post("/v2/models/doubler/infer", json=ROW)
                    except httpx.TransportError:
                        # The killed gateway had sent this response's headers, not its
                        # body: nginx has forwarded them and cannot retry, so the client
                        # does (inference is idempotent), as the OIP and OpenAI SDKs do.
                        codes["cut"] += 1
                        continue
                    codes[answer.status_code] += 1

            async def kill() -> None:
                await asyncio.sleep(1.0)
                gateways[0].process.kill()

            await asyncio.gather(*(worker() for _ in range(8)), kill())
        return codes

    codes = asyncio.run(load())
    print(f"\nkill -9 of one of two gateways behind nginx under load: {dict(codes)}")
    assert set(codes) <= {200, "cut"}, "nginx answered an error"
    assert codes["cut"] <= 8, "more responses cut than were in flight"
    assert codes[200] > 50
