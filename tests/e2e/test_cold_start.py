"""A request for a model whose node pool scaled to zero waits for a node to start (the
gateway's cold-start wait, core/gateway/cold_start.py), with real processes: two gateways
and a node found through the machine's Redis (a key prefix of the test's own).

The node serves, then leaves (SIGTERM, as a pool scaled to zero does); a request to the
gateway that waits up to a minute is sent, a node is started a second later, and the
request is answered 200 by it. The gateway that waits 1.5 s answers 503 with Retry-After
when no node comes."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import FIXTURE_MODELS, REDIS_URL
from tests.e2e.conftest import RunningServer, start_server, stop_server

NODE_KEY = "e2e-node-key-" + "n" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "g" * 20
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"
SHORT_WAIT_S = 1.5


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    yield {
        "MODELGATE_REDIS_URL": REDIS_URL,
        "MODELGATE_REDIS_KEY_PREFIX": prefix,
        "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
        "MODELGATE_NODE_TTL_SECONDS": "3",
        "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
    }
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def _node(env: dict[str, str], workdir: Path) -> RunningServer:
    return start_server(
        FIXTURE_MODELS,
        workdir,
        "--role",
        "node",
        "--node-id",
        "a",
        env={**env, "MODELGATE_ADMIN_KEY": NODE_KEY},
    )


def _gateway(env: dict[str, str], workdir: Path, wait_s: float) -> RunningServer:
    return start_server(
        FIXTURE_MODELS,
        workdir,
        "--role",
        "gateway",
        env={
            **env,
            "MODELGATE_ADMIN_KEY": GATEWAY_KEY,
            "MODELGATE_NODE_KEY": NODE_KEY,
            "MODELGATE_COLD_START_WAIT_SECONDS": str(wait_s),
        },
    )


def _infer(server: RunningServer) -> httpx.Response:
    return httpx.post(
        f"{server.url}{INFER}",
        json=ROW,
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        timeout=120,
    )


def _node_count(server: RunningServer) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("modelgate_nodes "))
    return int(float(line.split()[1]))


def test_a_request_waits_for_a_node_to_start_and_gives_up_with_503(
    env: dict[str, str], tmp_path: Path
) -> None:
    node = _node(env, tmp_path / "node-1")
    patient = _gateway(env, tmp_path / "gateway-patient", 60)
    hasty = _gateway(env, tmp_path / "gateway-hasty", SHORT_WAIT_S)
    servers = [node, patient, hasty]
    try:
        for gateway in (patient, hasty):  # both have seen the model announced
            answer = _infer(gateway)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [3, 6, 9, 12]

        stop_server(node)  # the pool scales to zero: the node says it is leaving
        deadline = time.monotonic() + 30
        while (_node_count(patient), _node_count(hasty)) != (0, 0):
            assert time.monotonic() < deadline, "the gateways still list the node"
            time.sleep(0.2)

        # no node comes: 503 with Retry-After, once the wait is over and not much later
        started = time.monotonic()
        refused = _infer(hasty)
        waited = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        assert "doubler" in refused.json()["error"]
        assert SHORT_WAIT_S * 0.9 <= waited < SHORT_WAIT_S + 10

        # a node comes a second after the request: the request is answered by it
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(_infer(patient)))
        waiting.start()
        time.sleep(1.0)
        assert not answers, "answered before any node was up"
        servers.append(_node(env, tmp_path / "node-2"))
        waiting.join(timeout=120)
        assert len(answers) == 1
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["outputs"][0]["data"] == [3, 6, 9, 12]
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop_server(server)
