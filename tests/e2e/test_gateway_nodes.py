"""A gateway and two nodes as real processes, nodes found through the machine's Redis (each
test has its own key prefix): requests are spread over both nodes, keep succeeding when one
is killed (kill -9), frozen (SIGSTOP) or shut down (SIGTERM), and never run past their
deadline. Each fault test prints its figure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient

from tests.conftest import FIXTURE_MODELS, REDIS_URL
from tests.e2e.conftest import RunningServer, start_server, stop_server

NODE_KEY = "e2e-node-key-" + "n" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "g" * 20
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"


class Cluster:
    def __init__(self, workdir: Path, prefix: str):
        self.workdir = workdir
        self.env = {
            "MODELGATE_REDIS_URL": REDIS_URL,
            "MODELGATE_REDIS_KEY_PREFIX": prefix,
            "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
            "MODELGATE_NODE_TTL_SECONDS": "3",
            "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
            "MODELGATE_BREAKER_OPEN_SECONDS": "2",
        }
        self.nodes: dict[str, RunningServer] = {}
        self.gateway: RunningServer | None = None

    def start_node(self, name: str) -> RunningServer:
        node = start_server(
            FIXTURE_MODELS,
            self.workdir / name,
            "--role",
            "node",
            "--node-id",
            name,
            env={**self.env, "MODELGATE_ADMIN_KEY": NODE_KEY},
        )
        self.nodes[name] = node
        return node

    def start_gateway(self) -> RunningServer:
        self.gateway = start_server(
            FIXTURE_MODELS,
            self.workdir / "gateway",
            "--role",
            "gateway",
            env={**self.env, "MODELGATE_ADMIN_KEY": GATEWAY_KEY, "MODELGATE_NODE_KEY": NODE_KEY},
        )
        return self.gateway

    def metrics(self) -> str:
        assert self.gateway is not None
        return httpx.get(f"{self.gateway.url}/metrics", timeout=5).text

    def stop(self) -> None:
        for server in [*self.nodes.values(), *([self.gateway] if self.gateway else [])]:
            if server.process.poll() is None:
                os.kill(server.process.pid, signal.SIGCONT)  # a test may have frozen it
            stop_server(server)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    running = Cluster(tmp_path, prefix)
    running.start_node("a")
    running.start_node("b")
    running.start_gateway()
    try:
        yield running
    finally:
        running.stop()
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def _sample(metrics: str, name: str) -> dict[str, float]:
    """``labels -> value`` of one metric's samples in a Prometheus exposition."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


async def _load(
    url: str,
    seconds: float,
    *,
    concurrency: int = 8,
    headers: dict[str, str] | None = None,
    during: object = None,
) -> tuple[Counter[int], list[float], list[str]]:
    """Steady inference load for ``seconds``: status counts, each request's latency, and
    the bodies of failed answers."""
    codes: Counter[int] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    stop = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}", **(headers or {})}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                answer = await client.post(INFER, json=ROW)
                latencies.append(time.monotonic() - started)
                codes[answer.status_code] += 1
                if answer.status_code != 200:
                    failures.append(answer.text)

        tasks = [worker() for _ in range(concurrency)]
        if during is not None:
            tasks.append(during)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
    return codes, latencies, failures


def test_the_gateway_spreads_requests_over_its_nodes_on_rest_and_grpc(cluster: Cluster) -> None:
    gateway = cluster.gateway
    assert gateway is not None
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    for _ in range(20):
        answer = httpx.post(f"{gateway.url}{INFER}", json=ROW, headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "2"
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
    client = grpcclient.InferenceServerClient(gateway.grpc_address)
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(2, 4))
    result = client.infer("doubler", [tensor], headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    assert result.as_numpy("y").tolist() == (np.arange(8).reshape(2, 4) * 3).tolist()
    client.close()
    # the gateway checks credentials itself: the nodes' key is not the gateway's
    refused = httpx.post(f"{gateway.url}{INFER}", json=ROW, timeout=10)
    assert refused.status_code == 401
    unknown = httpx.post(f"{gateway.url}/v2/models/nope/infer", json=ROW, headers=auth)
    assert unknown.status_code == 404
    calls = _sample(cluster.metrics(), "modelgate_node_requests_total")
    assert calls.get('{node="a",outcome="ok"}', 0) > 0
    assert calls.get('{node="b",outcome="ok"}', 0) > 0


def test_kill_9_of_one_node_under_load_fails_no_request(cluster: Cluster) -> None:
    gateway = cluster.gateway
    assert gateway is not None

    async def kill_a() -> None:
        await asyncio.sleep(1.0)
        cluster.nodes["a"].process.kill()

    codes, _, failures = asyncio.run(_load(gateway.url, 4.0, during=kill_a()))
    metrics = cluster.metrics()
    retries = _sample(metrics, "modelgate_node_retries_total")
    print(f"\nkill -9 of node a under load: {dict(codes)}, retries {retries}")
    assert set(codes) == {200}, failures[:3]
    assert codes[200] > 50
    breakers = _sample(metrics, "modelgate_breaker_state")
    assert breakers['{model="",node="a",version=""}'] == 1.0  # open
    assert breakers['{model="",node="b",version=""}'] == 0.0


def test_a_frozen_node_opens_its_breaker_and_no_request_outlives_its_deadline(
    cluster: Cluster,
) -> None:
    gateway = cluster.gateway
    assert gateway is not None
    frozen = cluster.nodes["b"].process.pid
    deadline_s = 1.0

    async def freeze_b() -> None:
        await asyncio.sleep(0.5)
        os.kill(frozen, signal.SIGSTOP)
        await asyncio.sleep(5.0)
        os.kill(frozen, signal.SIGCONT)

    codes, latencies, failures = asyncio.run(
        _load(
            gateway.url,
            6.0,
            headers={"X-Request-Timeout-Ms": str(int(deadline_s * 1000))},
            during=freeze_b(),
        )
    )
    metrics = cluster.metrics()
    print(
        f"\nSIGSTOP of node b for 5 s: {dict(codes)}, slowest {max(latencies) * 1000:.0f} ms "
        f"(deadline {deadline_s * 1000:.0f} ms), calls "
        f"{_sample(metrics, 'modelgate_node_requests_total')}"
    )
    # Each request either answered or was refused at its deadline: none ran on past it
    # (the margin is the client's and the loop's own scheduling on a 2-core machine).
    assert max(latencies) < deadline_s + 0.5
    assert codes[200] > 0.99 * sum(codes.values()), failures[:3]
    assert set(codes) <= {200, 504}
    calls = _sample(metrics, "modelgate_node_requests_total")
    assert calls.get('{node="b",outcome="deadline_exceeded"}', 0) >= 1


def test_a_node_shut_down_with_sigterm_leaves_without_failing_requests(cluster: Cluster) -> None:
    gateway = cluster.gateway
    assert gateway is not None
    stopping = cluster.nodes["b"]

    async def stop_b() -> None:
        await asyncio.sleep(1.0)
        stopping.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(stopping.process.wait)

    codes, _, failures = asyncio.run(_load(gateway.url, 4.0, during=stop_b()))
    print(f"\nSIGTERM of node b under load: {dict(codes)}")
    assert stopping.process.returncode == 0
    assert set(codes) == {200}, failures[:3]
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        prefix = cluster.env["MODELGATE_REDIS_KEY_PREFIX"]
        assert client.get(f"{prefix}node:b") is None
        assert client.get(f"{prefix}node:a") is not None
    deadline = time.monotonic() + 5
    while _sample(cluster.metrics(), "modelgate_nodes") != {} and time.monotonic() < deadline:
        if "modelgate_nodes 1.0" in cluster.metrics():
            break
        time.sleep(0.1)
    assert "modelgate_nodes 1.0" in cluster.metrics()


@contextlib.contextmanager
def static_pair(repository: Path, workdir: Path) -> Iterator[RunningServer]:
    """A node and a gateway that knows it from a static list (no Redis); yields the
    gateway, and stops both (each must exit cleanly)."""
    node = start_server(
        repository, workdir / "node", "--role", "node", env={"MODELGATE_ADMIN_KEY": NODE_KEY}
    )
    try:
        gateway = start_server(
            repository,
            workdir / "gateway",
            "--role",
            "gateway",
            "--nodes",
            node.grpc_address,
            env={
                "MODELGATE_ADMIN_KEY": GATEWAY_KEY,
                "MODELGATE_NODE_KEY": NODE_KEY,
                "MODELGATE_NODE_KEY_NODES": "*",  # the listed node is a modelgate node
            },
        )
        try:
            yield gateway
        finally:
            assert stop_server(gateway) == 0
    finally:
        assert stop_server(node) == 0


def test_a_gateway_with_a_static_node_list_needs_no_redis(tmp_path: Path) -> None:
    with static_pair(FIXTURE_MODELS, tmp_path) as gateway:
        auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        answer = httpx.post(f"{gateway.url}{INFER}", json=ROW, headers=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        # the signature came from the node's ModelMetadata: bad input is refused at
        # the gateway, in OIP's shape
        bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        refused = httpx.post(f"{gateway.url}{INFER}", json=bad, headers=auth, timeout=10)
        assert refused.status_code == 400
        assert "error" in refused.json()


def test_a_nodes_anomaly_flag_reaches_the_client_through_the_gateway(
    tmp_path: Path, demo_models: Path
) -> None:
    """The anomaly check runs where the reference profile is, on the node; its verdict
    (response parameters, and REST's ``X-Modelgate-Anomaly``) comes back through the
    gateway over REST and gRPC."""
    from tests.api.test_anomaly import GARBAGE, TYPICAL

    with static_pair(demo_models, tmp_path) as gateway:
        auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        url = f"{gateway.url}/v2/models/credit-risk/infer"

        def body(row: list[float]) -> dict[str, object]:
            return {"inputs": [{"name": "features", "datatype": "FP32",
                                "shape": [1, 12], "data": row}]}  # fmt: skip

        typical = httpx.post(url, json=body(TYPICAL), headers=auth, timeout=10)
        assert typical.status_code == 200, typical.text
        assert "x-modelgate-anomaly" not in typical.headers
        assert typical.json()["parameters"] == {"anomaly_score": 0.0}
        flagged = httpx.post(url, json=body(GARBAGE), headers=auth, timeout=10)
        assert flagged.status_code == 200, flagged.text
        assert flagged.headers["x-modelgate-anomaly"] == "1.0"
        assert flagged.json()["parameters"] == {
            "anomaly_score": 1.0,
            "anomalous": True,
            "anomalous_features": "annual_income,home_ownership",
        }
        client = grpcclient.InferenceServerClient(gateway.grpc_address)
        tensor = grpcclient.InferInput("features", [1, 12], "FP32")
        tensor.set_data_from_numpy(np.array([GARBAGE], dtype=np.float32))
        result = client.infer(
            "credit-risk", [tensor], headers={"authorization": f"Bearer {GATEWAY_KEY}"}
        )
        parameters = result.get_response().parameters
        assert parameters["anomalous"].bool_param is True
        assert parameters["anomaly_score"].double_param == 1.0
        client.close()
