"""The KServe Python SDK (``kserve``, from PyPI) calls modelgate over REST and gRPC.

The SDK is heavy (the Kubernetes client, pandas, its own FastAPI and Starlette and protobuf)
and pins versions modelgate's environment does not share, so it lives in a virtual
environment of its own in the user's cache (tests/e2e/peer_envs.py), made on a machine's
first use from ``tests/e2e/kserve/requirements.txt`` (exact versions; needs the package
index once) and reused after. ``tests/e2e/kserve/client.py`` runs in it against a real
``modelgate serve``: readiness, and inference with JSON and with binary tensor data over
REST, and over gRPC, with the key in the headers as a KServe user sends it; the answers must
equal what modelgate answers to plain JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer
from tests.e2e.peer_envs import peer_python

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent / "kserve"
ROWS = [
    [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1],
    [0, 21000, 0.9, 0.1, 22, 0, 3, 9000, 60, 2, 0, 0],
]


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    """The interpreter of the SDK's own environment, made on first use."""
    return peer_python("kserve-venv", HERE / "requirements.txt")


def test_the_kserve_sdk_calls_modelgate_over_rest_and_grpc(
    kserve_python: Path, demo_server: RunningServer
) -> None:
    done = subprocess.run(
        [
            str(kserve_python),
            HERE / "client.py",
            demo_server.url,
            demo_server.grpc_address,
            ADMIN_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout)
    assert found["rest_server_ready"] is True
    assert found["rest_model_ready"] is True
    assert found["grpc_server_ready"] is True
    assert found["grpc_model_ready"] is True

    plain = httpx.post(
        f"{demo_server.url}/v2/models/credit-risk/infer",
        json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 12], "data": ROWS}]},
        headers=AUTH,
        timeout=30,
    )
    assert plain.status_code == 200, plain.text
    expected = {o["name"]: o["data"] for o in plain.json()["outputs"]}
    for way in ("rest_binary_False", "rest_binary_True", "grpc"):
        outputs = found[way]
        assert set(outputs) == set(expected), way
        assert [row[1] for row in outputs["probabilities"]] == pytest.approx(
            expected["probabilities"][1::2], abs=1e-6
        ), way
        assert [int(v) for v in outputs["label"]] == [int(v) for v in expected["label"]], way
