"""A gateway and two nodes as real processes (nodes found through the machine's Redis, under
a key prefix of the test's own), and an all-in-one server, serving the demo credit-risk
model (anomaly check: flag) and a copy that rejects: concurrent callers, some with typical
rows and some with out-of-distribution ones, are merged into fewer node calls, and each
gets exactly the anomaly outcome the all-in-one server gives the same request (score,
flag, features, ``X-Modelgate-Anomaly``, or the refusal and its words)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from tests.conftest import REDIS_URL
from tests.e2e.conftest import RunningServer, start_server, stop_server

NODE_KEY = "e2e-node-key-" + "a" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "b" * 20
STRICT = "credit-risk-strict"

TYPICAL = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]
#: each an out-of-distribution row: one feature far out, an unseen category, a rare value
ODD = [
    [2, 9e9, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 7],  # income, home_ownership
    [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 5],  # an unseen home_ownership
    [2, 52000, 0.31, 0.42, 36, 5, 0, -4e6, 36, 9, 1, 1],  # a negative loan amount
    [2, 52000, 0.31, 7.5, 36, 5, 0, 12000, 36, 9, 1, 1],  # utilization far past its range
]


def _typical(i: int) -> list[float]:
    """A typical row, a little different for each caller (its own prediction)."""
    row = list(TYPICAL)
    row[1] = 40000 + 500 * (i % 30)
    row[8] = (12, 24, 36, 48, 60)[i % 5]
    return row


def _requests(count: int) -> list[tuple[str, list[list[float]]]]:
    """(model, rows) of ``count`` callers: mostly typical, every third odd, every seventh
    a typical row and an odd one (flagged or refused as a whole, as on one server)."""
    found = []
    for i in range(count):
        model = STRICT if i % 4 == 3 else "credit-risk"
        if i % 7 == 6:
            rows = [_typical(i), ODD[i % len(ODD)]]
        elif i % 3 == 2:
            rows = [ODD[i % len(ODD)]]
        else:
            rows = [_typical(i)]
        found.append((model, rows))
    return found


def _repository(demo: Path, root: Path) -> Path:
    """The demo credit-risk model as built, and a copy that rejects anomalous requests."""
    root.mkdir()
    os.symlink(demo / "credit-risk", root / "credit-risk")
    folder = root / STRICT
    folder.mkdir()
    manifest = yaml.safe_load((demo / "credit-risk" / "model.yaml").read_text())
    manifest["anomaly"] = {"action": "reject", "threshold": 0.5}
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    for version in ("1", "2"):
        os.symlink(demo / "credit-risk" / version, folder / version)
    return root


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, demo_models: Path
) -> Iterator[dict[str, RunningServer]]:
    """Two nodes and a gateway merging at most one call in flight per version (so that
    concurrent requests queue and merge), and an all-in-one server."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    repository = _repository(demo_models, tmp_path / "models")
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    env = {
        "MODELGATE_REDIS_URL": REDIS_URL,
        "MODELGATE_REDIS_KEY_PREFIX": prefix,
        "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
        "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
    }
    running: dict[str, RunningServer] = {}
    try:
        for name in ("a", "b"):
            running[name] = start_server(
                repository,
                tmp_path / name,
                "--role",
                "node",
                "--node-id",
                name,
                env={**env, "MODELGATE_ADMIN_KEY": NODE_KEY},
            )
        running["gateway"] = start_server(
            repository,
            tmp_path / "gateway",
            "--role",
            "gateway",
            env={
                **env,
                "MODELGATE_ADMIN_KEY": GATEWAY_KEY,
                "MODELGATE_NODE_KEY": NODE_KEY,
                "MODELGATE_GATEWAY_MERGE_CALLS": "1",
            },
        )
        running["all"] = start_server(
            repository, tmp_path / "all", env={"MODELGATE_ADMIN_KEY": GATEWAY_KEY}
        )
        yield running
    finally:
        for server in running.values():
            stop_server(server)
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)


def _outcome(answer: httpx.Response) -> tuple[int, Any, str | None, Any]:
    """What a caller sees of the anomaly check: status, parameters (or the error), the
    header, and the outputs."""
    body = answer.json()
    if answer.status_code != 200:
        return answer.status_code, body, answer.headers.get("x-modelgate-anomaly"), None
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    return 200, body["parameters"], answer.headers.get("x-modelgate-anomaly"), outputs


async def _ask(url: str, requests: list[tuple[str, list[list[float]]]]) -> list[Any]:
    """Every request at once, each its own caller; their outcomes in order."""
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=limits
    ) as client:

        async def one(model: str, rows: list[list[float]]) -> Any:
            tensor = {"name": "features", "datatype": "FP32", "shape": [len(rows), 12],
                      "data": [v for row in rows for v in row]}  # fmt: skip
            path = f"/v2/models/{model}/versions/2/infer"
            return _outcome(await client.post(path, json={"inputs": [tensor]}))

        return list(await asyncio.gather(*(one(m, rows) for m, rows in requests)))


def _node_calls(server: RunningServer, model: str) -> tuple[int, int]:
    """(calls, rows) the node served of ``model`` version 2."""
    answer = httpx.get(
        f"{server.url}/v2/models/{model}/versions/2/stats",
        headers={"Authorization": f"Bearer {NODE_KEY}"},
        timeout=10,
    )
    if answer.status_code == 404:  # never loaded there
        return 0, 0
    assert answer.status_code == 200, answer.text
    stats = answer.json()["model_stats"][0]
    return stats["inference_stats"]["success"]["count"], stats["inference_count"]


def _anomalous(server: RunningServer) -> float:
    """The server's count of anomalous requests, any model and action."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelgate_anomalous_requests_total{")
    )


def test_merged_callers_each_get_the_all_in_one_anomaly_outcome(
    servers: dict[str, RunningServer],
) -> None:
    requests = _requests(96)
    before = _counts(servers)
    merged = asyncio.run(_ask(servers["gateway"].url, requests))
    alone = asyncio.run(_ask(servers["all"].url, requests))
    assert merged == alone  # status, parameters or refusal, header and outputs, per caller
    statuses = [outcome[0] for outcome in merged]
    flagged = [o for o in merged if o[0] == 200 and o[1].get("anomalous")]
    assert statuses.count(400) >= 8  # the strict copy refused its odd callers
    assert len(flagged) >= 16
    assert all(o[2] == str(o[1]["anomaly_score"]) for o in flagged)
    assert any(o[0] == 200 and not o[1].get("anomalous") for o in merged)
    # the callers went through merged node calls, and every admitted row ran once
    answered_rows = sum(len(rows) for (_, rows), o in zip(requests, merged, strict=True)
                        if o[0] == 200)  # fmt: skip
    after = _counts(servers)
    calls, rows = after["calls"] - before["calls"], after["rows"] - before["rows"]
    assert rows == answered_rows  # a refusal cost no node call
    assert calls < statuses.count(200)
    # the gateway checked each caller; the nodes checked none of its calls again
    assert after["gateway"] - before["gateway"] == len(flagged) + statuses.count(400)
    assert after["nodes"] == before["nodes"] == 0


def _counts(servers: dict[str, RunningServer]) -> dict[str, float]:
    """The nodes' calls and rows of both models, and the anomalous requests counted on the
    gateway and on the nodes."""
    found = {"calls": 0.0, "rows": 0.0}
    for node in ("a", "b"):
        for model in ("credit-risk", STRICT):
            calls, rows = _node_calls(servers[node], model)
            found["calls"] += calls
            found["rows"] += rows
    found["gateway"] = _anomalous(servers["gateway"])
    found["nodes"] = _anomalous(servers["a"]) + _anomalous(servers["b"])
    return found


def _grpc_outcome(server: RunningServer, model: str, row: list[float]) -> Any:
    """The anomaly parameters of a gRPC answer, or the refusal's status and words."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("features", [1, 12], "FP32")
    tensor.set_data_from_numpy(np.array([row], dtype=np.float32))
    try:
        result = client.infer(
            model, [tensor], model_version="2",
            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
        )  # fmt: skip
    except InferenceServerException as exc:
        return exc.status(), exc.message()
    finally:
        client.close()
    parameters = result.get_response().parameters
    return {name: str(parameters[name]).strip() for name in sorted(parameters)}


def test_grpc_callers_get_the_all_in_one_anomaly_outcome_through_the_gateway(
    servers: dict[str, RunningServer],
) -> None:
    for model, row in [("credit-risk", TYPICAL), ("credit-risk", ODD[0]), (STRICT, ODD[1])]:
        through = _grpc_outcome(servers["gateway"], model, row)
        assert through == _grpc_outcome(servers["all"], model, row)
        if model == STRICT:
            assert through[0] == "StatusCode.INVALID_ARGUMENT"
        elif row is not TYPICAL:
            assert "anomalous" in through
